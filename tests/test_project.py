"""The project store: project.json, the database, datasets, folders, saved models, variables."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import sqlalchemy as sa
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from labelloop.cli import cli
from labelloop.errors import (
    ConflictError,
    DescriptorError,
    LabelloopError,
    NotFoundError,
    UntrustedModelError,
)
from labelloop.project import Project, UnsafePathError, end_run, list_runs, load_skops, start_run
from labelloop.project.datasets import chunks as datasets_mod  # where the chunk files are written

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def project(tmp_path) -> Project:
    return Project.init(tmp_path / "proj", key="TEST")


def frame(n: int = 5, start: int = 0) -> pd.DataFrame:
    """A frame with one column of every storage type."""
    i = np.arange(start, start + n)
    return pd.DataFrame({
        "id": i.astype("int64"),
        "x": i * 0.5,
        "name": [f"item {k}" for k in i],
        "flag": i % 2 == 0,
        "when": pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(i, unit="h"),
    })


def db_snapshot(path: Path) -> dict:
    """Every table's rows of a SQLite file, to show that nothing was written."""
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in sorted(tables)}
    finally:
        con.close()


# ---------------------------------------------------------------- project and database
@pytest.mark.sqlite_only
def test_init_creates_project_json_and_a_wal_database(tmp_path):
    project = Project.init(tmp_path / "p", key="DIGITS")
    cfg = json.loads((tmp_path / "p" / "project.json").read_text())
    assert cfg["key"] == "DIGITS"
    assert {"datasets", "folders", "models", "recipes", "webapps", "scenarios"} <= set(cfg)
    db = tmp_path / "p" / "labelloop.db"
    assert db.is_file()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ll_datasets", "ll_variables", "ll_model_versions", "ll_runs"} <= tables
    con.close()
    with project.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.sqlite_only
def test_page_size_of_a_new_database_can_be_set(tmp_path, monkeypatch):
    con = sqlite3.connect(Project.init(tmp_path / "a").dir / "labelloop.db")
    assert con.execute("PRAGMA page_size").fetchone()[0] == 4096  # SQLite's default
    con.close()
    monkeypatch.setenv("LABELLOOP_SQLITE_PAGE_SIZE", "16384")
    con = sqlite3.connect(Project.init(tmp_path / "b").dir / "labelloop.db")
    assert con.execute("PRAGMA page_size").fetchone()[0] == 16384
    con.close()


@pytest.mark.sqlite_only
def test_synchronous_can_be_relaxed_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELLOOP_SQLITE_SYNCHRONOUS", "NORMAL")
    project = Project.init(tmp_path / "p")
    with project.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_init_refuses_an_existing_project_and_changes_nothing(project):
    before = project.config_path.read_text()
    with pytest.raises(ConflictError, match="already a Labelloop project"):
        Project.init(project.dir)
    assert project.config_path.read_text() == before


def test_open_a_directory_that_is_not_a_project(tmp_path):
    with pytest.raises(NotFoundError, match="not a Labelloop project.*labelloop init"):
        Project.open(tmp_path)


def test_open_uses_labelloop_project_env(project, monkeypatch, tmp_path):
    monkeypatch.setenv("LABELLOOP_PROJECT", str(project.dir))
    monkeypatch.chdir(tmp_path)
    assert Project.open().dir == project.dir


def test_database_url_puts_the_data_in_another_sqlite_file(tmp_path):
    other = tmp_path / "elsewhere.db"
    url = f"sqlite:///{other}"
    project = Project.init(tmp_path / "p", database_url=url)
    project.dataset("d", create=True).write(frame(3))
    assert not (tmp_path / "p" / "labelloop.db").exists()
    assert db_snapshot(other)["ll_datasets"][0][0] == "d"
    # The same URL from the environment finds the data again.
    os.environ["LABELLOOP_DATABASE_URL"] = url
    try:
        assert Project.open(tmp_path / "p").dataset("d").count() == 3
    finally:
        del os.environ["LABELLOOP_DATABASE_URL"]
    # init remembered the URL (it has no password), so plain open finds the data too.
    assert json.loads((tmp_path / "p" / "project.json").read_text())["settings"] == {
        "database_url": url}
    assert Project.open(tmp_path / "p").dataset("d").count() == 3
    assert not (tmp_path / "p" / "labelloop.db").exists()


def test_a_database_url_with_a_password_is_not_written_to_project_json(tmp_path):
    url = f"sqlite+pysqlite://user:secret@/{tmp_path / 'x.db'}"
    try:
        Project.init(tmp_path / "p", database_url=url)
    except LabelloopError:
        pass  # the sqlite driver may refuse credentials; what matters is what was written
    config = tmp_path / "p" / "project.json"
    assert not config.exists() or "secret" not in config.read_text()


def test_database_url_option_of_the_cli(tmp_path, monkeypatch):
    other = tmp_path / "cli.db"
    runner = CliRunner()
    res = runner.invoke(cli, ["--database-url", f"sqlite:///{other}", "init", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert other.is_file() and not (tmp_path / "p" / "labelloop.db").exists()
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", f"sqlite:///{other}")
    res = runner.invoke(cli, ["--project", str(tmp_path / "p"), "variables", "set", "v", "7"])
    assert res.exit_code == 0, res.output
    rows = db_snapshot(other)["ll_variables"]
    assert [(n, json.loads(str(v))) for n, v in rows] == [("v", 7)]


@pytest.mark.parametrize("url", ["not a url", "sqlite:////nonexistent-dir/x.db"])
def test_a_bad_database_url_is_one_clear_error_and_creates_no_project(tmp_path, url):
    with pytest.raises(LabelloopError, match="database"):
        Project.init(tmp_path / "p", database_url=url)
    assert not (tmp_path / "p" / "project.json").exists()


def test_malformed_project_json_names_file_and_line(project):
    project.config_path.write_text('{\n  "key": "X",\n  "datasets": {,}\n}\n')
    with pytest.raises(DescriptorError) as err:
        Project.open(project.dir)
    assert str(project.config_path) in str(err.value)
    assert err.value.line == 3 and "line 3" in str(err.value)


def test_schema_violation_in_project_json_names_file_and_pointer(project):
    cfg = json.loads(project.config_path.read_text())
    cfg["recipes"] = {"r": {"type": "sample/scale-column", "inputs": {"input": 5}}}
    project.config_path.write_text(json.dumps(cfg))
    with pytest.raises(DescriptorError) as err:
        Project.open(project.dir)
    assert str(project.config_path) in str(err.value)
    assert err.value.pointer == "/recipes/r/inputs/input"


# ---------------------------------------------------------------- datasets
@pytest.mark.parametrize("storage", ["rows", "columns"])
def test_dataset_write_read_append_count_chunks(project, storage):
    ds = project.dataset("items", create=True)
    assert not ds.exists() and ds.count() == 0 and ds.schema == []
    df = frame(7)
    ds.write(df, storage=storage)
    assert ds.storage == storage
    assert ds.schema == [{"name": "id", "type": "bigint"}, {"name": "x", "type": "double"},
                         {"name": "name", "type": "string"}, {"name": "flag", "type": "boolean"},
                         {"name": "when", "type": "date"}]
    pd.testing.assert_frame_equal(ds.read(), df, check_dtype=False)
    assert ds.read()["name"].dtype == object
    ds.append(frame(3, start=7))
    assert ds.count() == 10
    assert ds.read()["id"].tolist() == list(range(10))
    part = ds.read(columns=["name", "id"], limit=4, offset=5)
    assert list(part.columns) == ["name", "id"] and part["id"].tolist() == [5, 6, 7, 8]
    chunks = list(ds.iter_chunks(chunksize=4, columns=["id"], with_row=True))
    assert all(1 <= len(c) <= 4 for c in chunks) and list(chunks[0].columns) == ["_row", "id"]
    if storage == "rows":
        assert [len(c) for c in chunks] == [4, 4, 2]
    joined = pd.concat(chunks, ignore_index=True)
    assert joined["id"].tolist() == list(range(10))
    assert joined["_row"].tolist() == list(range(1, 11))
    ds.append(pd.DataFrame({"id": [10], "name": ["last"]}))  # missing columns: missing values
    last = ds.read(offset=10)
    assert last["name"].tolist() == ["last"] and pd.isna(last["x"].iloc[0])
    assert project.dataset_names() == ["items"]


def test_default_storage_switches_at_columnar_min_rows(project):
    n = datasets_mod.COLUMNAR_MIN_ROWS
    small, big = project.dataset("small", create=True), project.dataset("big", create=True)
    small.write(pd.DataFrame({"v": np.arange(n - 1)}))
    big.write(pd.DataFrame({"v": np.arange(n)}))
    assert small.storage == "rows" and big.storage == "columns"
    assert big.count() == n and big.read(offset=n - 2)["v"].tolist() == [n - 2, n - 1]


def test_unknown_storage_is_refused(project):
    with pytest.raises(LabelloopError, match="unknown storage 'heap'"):
        project.dataset("d", create=True).write(frame(2), storage="heap")


@pytest.mark.parametrize("storage", ["rows", "columns"])
def test_write_replaces_atomically_and_a_failed_write_keeps_the_old_data(project, storage):
    ds = project.dataset("d", create=True)
    ds.write(frame(4), storage=storage)
    gen = ds.generation()
    # A failure in the middle of the transaction rolls the new generation back.
    with pytest.raises(RuntimeError):
        with project.write_transaction() as conn:
            ds.write(pd.DataFrame({"other": ["a", "b"]}), conn=conn, storage=storage)
            raise RuntimeError("crash after writing")
    assert ds.columns == ["id", "x", "name", "flag", "when"]
    assert ds.read()["id"].tolist() == [0, 1, 2, 3] and ds.generation() == gen
    # A frame the store refuses leaves the data as it was too.
    bad = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(LabelloopError, match="duplicate column names"):
        ds.write(bad)
    assert ds.count() == 4
    ds.write(frame(2, start=100), storage=storage)
    assert ds.read()["id"].tolist() == [100, 101] and ds.generation() > gen
    # The old generation's storage is gone.
    tables = sa.inspect(project.engine).get_table_names()
    assert sum(t.startswith("ds_d_") for t in tables) == (1 if storage == "rows" else 0)


def test_append_refuses_unknown_columns_and_writes_nothing(project):
    ds = project.dataset("d", create=True)
    ds.write(frame(2))
    with pytest.raises(LabelloopError, match="no column 'extra'"):
        ds.append(pd.DataFrame({"id": [9], "extra": [1]}))
    assert ds.count() == 2


def test_table_refuses_column_storage_and_to_rows_converts_it(project):
    ds = project.dataset("d", create=True)
    ds.write(frame(6), storage="columns")
    with pytest.raises(ConflictError, match="stored column-wise.*to_rows"):
        ds.table()  # no side effect: nothing converted behind the caller's back
    assert ds.storage == "columns"
    t = ds.to_rows()
    assert ds.storage == "rows" and ds.table().name == t.name
    with project.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c._row, t.c.id).order_by(t.c._row)).all()
    assert [tuple(r) for r in rows] == [(k + 1, k) for k in range(6)]
    with project.write_transaction() as conn:
        conn.execute(sa.update(t).where(t.c.id == 2).values(name="edited"))
    ds.append(frame(1, start=6))
    out = ds.read()
    assert out["name"].tolist()[2] == "edited" and out["id"].tolist() == list(range(7))


def test_unknown_dataset_and_bad_names(project):
    with pytest.raises(NotFoundError, match="unknown dataset 'nope'"):
        project.dataset("nope")
    with pytest.raises(LabelloopError, match="invalid dataset name"):
        project.dataset("../x", create=True)
    project.declare("datasets", "declared")
    ds = project.dataset("declared")
    with pytest.raises(NotFoundError, match="no data yet"):
        ds.read()


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_import_and_export_round_trip(project, tmp_path, ext):
    df = frame(5).drop(columns=["when"])
    src = tmp_path / f"in.{ext}"
    df.to_csv(src, index=False) if ext == "csv" else df.to_parquet(src, index=False)
    ds = project.dataset("d", create=True)
    assert ds.import_file(src) == 5
    pd.testing.assert_frame_equal(ds.read(), df, check_dtype=False)
    out = tmp_path / f"out.{ext}"
    assert ds.export_file(out) == 5
    back = pd.read_csv(out) if ext == "csv" else pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


def test_parquet_keeps_dates(project, tmp_path):
    ds = project.dataset("d", create=True)
    ds.write(frame(3))
    ds.export_file(tmp_path / "out.parquet")
    other = project.dataset("e", create=True)
    other.import_file(tmp_path / "out.parquet")
    assert other.schema == ds.schema
    pd.testing.assert_frame_equal(other.read(), ds.read())


def test_import_over_existing_data_needs_replace(project, tmp_path):
    ds = project.dataset("d", create=True)
    ds.write(frame(3))
    before = db_snapshot(project.dir / "labelloop.db")
    src = tmp_path / "new.csv"
    pd.DataFrame({"a": [1, 2]}).to_csv(src, index=False)
    with pytest.raises(ConflictError, match="already has data.*--replace"):
        ds.import_file(src)
    assert db_snapshot(project.dir / "labelloop.db") == before
    assert ds.import_file(src, replace=True) == 2
    assert ds.columns == ["a"]


def test_import_of_unreadable_files(project, tmp_path):
    ds = project.dataset("d", create=True)
    with pytest.raises(NotFoundError, match="no such file"):
        ds.import_file(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LabelloopError, match="cannot read"):
        ds.import_file(tmp_path / "empty.csv")
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(LabelloopError, match="cannot tell the format"):
        ds.import_file(tmp_path / "data.json")
    assert not ds.exists()


# ---------------------------------------------------------------- folders
def test_folder_list_read_write(project, tmp_path):
    project.declare("folders", "images", {"path": "imgs"})
    f = project.folder("images")
    assert f.root == project.dir / "imgs" and f.list() == []
    f.write_bytes("a/one.bin", b"1")
    f.write_bytes("two.bin", b"22")
    with f.open("a/three.txt", "w") as fh:
        fh.write("three")
    assert f.list() == ["a/one.bin", "a/three.txt", "two.bin"]
    assert f.read_bytes("two.bin") == b"22" and f.exists("a/one.bin")
    with pytest.raises(NotFoundError, match="no file 'zzz'"):
        f.read_bytes("zzz")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_text("x")
    assert f.import_dir(src) == 1 and f.read_bytes("sub/x.txt") == b"x"
    with pytest.raises(NotFoundError, match="unknown folder 'nope'"):
        project.folder("nope")


@pytest.mark.parametrize("bad", ["../outside.txt", "a/../../outside.txt", "/etc/passwd",
                                 "..\\outside.txt", ""])
def test_folder_paths_that_escape_are_refused(project, tmp_path, bad):
    project.declare("folders", "f", {"path": "f"})
    f = project.folder("f")
    with pytest.raises(UnsafePathError):
        f.write_bytes(bad, b"x")
    with pytest.raises(UnsafePathError):
        f.read_bytes(bad)
    assert not (project.dir / "outside.txt").exists() and f.list() == []


def test_folder_symlink_leaving_the_folder_is_refused(project, tmp_path):
    project.declare("folders", "f", {"path": "f"})
    f = project.folder("f")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.txt").write_text("secret")
    f.root.mkdir(parents=True)
    (f.root / "link").symlink_to(outside)
    (f.root / "inside").symlink_to(f.root)  # a link that stays inside is fine
    with pytest.raises(UnsafePathError, match="through a link"):
        f.read_bytes("link/s.txt")
    with pytest.raises(UnsafePathError, match="through a link"):
        f.write_bytes("link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    f.write_bytes("ok.txt", b"ok")
    assert f.read_bytes("inside/ok.txt") == b"ok"


# ---------------------------------------------------------------- saved models
class NotTrusted:
    """A type skops will not load unless told to trust it."""

    def __init__(self, value: int = 3):
        self.value = value


def fitted_model() -> LogisticRegression:
    return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])


def test_saved_model_versions_metadata_and_load(project):
    m = project.model("clf", create=True)
    assert m.versions() == [] and m.latest() is None
    with pytest.raises(NotFoundError, match="no version yet"):
        m.load()
    meta = {"rows": 4, "classes": np.array(["a", "b"]), "metrics": {"accuracy": np.float64(0.75)},
            "train_date": "2024-01-01T00:00:00Z"}
    assert m.save(fitted_model(), meta) == 1
    assert m.save(fitted_model(), {"rows": 5}) == 2
    versions = m.versions()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["classes"] == ["a", "b"] and versions[0]["metrics"]["accuracy"] == 0.75
    assert versions[0]["file"] == "models/clf/v1.skops"
    assert (project.dir / "models" / "clf" / "v1.skops").is_file()
    assert m.latest()["rows"] == 5 and m.metadata(1)["rows"] == 4
    loaded = m.load(1)
    assert loaded.predict([[3.0]]).tolist() == [1]
    assert project.model_names() == ["clf"]
    assert Project.open(project.dir).model("clf").latest()["version"] == 2
    with pytest.raises(NotFoundError, match="no version 9"):
        m.load(9)
    with pytest.raises(NotFoundError, match="unknown saved model 'other'"):
        project.model("other")


def test_a_file_that_is_not_skops_is_refused(project, tmp_path):
    m = project.model("clf", create=True)
    m.save(fitted_model())
    path = project.dir / m.latest()["file"]
    path.write_bytes(b"\x80\x04\x95not a skops zip")  # e.g. a pickle
    with pytest.raises(UntrustedModelError, match="not a skops model file"):
        m.load()
    other = tmp_path / "model.pkl"
    other.write_text("hello")
    with pytest.raises(UntrustedModelError, match="not a skops model file"):
        load_skops(other)


def test_a_model_with_an_untrusted_type_is_refused(project, tmp_path, monkeypatch):
    path = tmp_path / "custom.skops"
    sio.dump({"model": NotTrusted(5)}, path)
    type_name = f"{NotTrusted.__module__}.NotTrusted"
    with pytest.raises(UntrustedModelError, match=f"not trusted: {type_name}.*LABELLOOP_TRUSTED_TYPES"):
        load_skops(path)
    assert load_skops(path, trusted=[type_name])["model"].value == 5
    monkeypatch.setenv("LABELLOOP_TRUSTED_TYPES", f"x.Y, {type_name}")
    assert load_skops(path)["model"].value == 5


# ---------------------------------------------------------------- variables and runs
def test_variables_hold_json_values(project):
    v = project.variables
    assert v.get("missing") is None and v.get("missing", 4) == 4
    v.set("obj", {"a": [1, 2.5, None], "b": "text"})
    v.set("flag", True)
    v.set("n", 1)
    v.set("n", 2)  # set twice: one row
    assert v.incr("n") == 3 and v.incr("n", by=5) == 8
    assert v.incr("fresh") == 1
    again = Project.open(project.dir).variables
    assert again.get("obj") == {"a": [1, 2.5, None], "b": "text"}
    assert again.all() == {"obj": {"a": [1, 2.5, None], "b": "text"}, "flag": True, "n": 8,
                           "fresh": 1}


def test_variables_start_from_project_json(tmp_path):
    project = Project.init(tmp_path / "p", config={"variables": {"session": 4, "name": "x"}})
    assert project.variables.get("session") == 4
    assert project.variables.incr("session") == 5
    assert project.variables.all() == {"session": 5, "name": "x"}


def test_incr_of_a_non_number_is_a_clear_error(project):
    project.variables.set("s", "text")
    with pytest.raises(LabelloopError, match="'s'.*not an integer"):
        project.variables.incr("s")
    assert project.variables.get("s") == "text"


def test_runs_are_recorded(project):
    ok = start_run(project.engine, "recipe", "r", {"type": "t"})
    end_run(project.engine, ok, "SUCCESS", None, {"rows": 3})
    bad = start_run(project.engine, "recipe", "r")
    end_run(project.engine, bad, "FAILED", "boom")
    runs = list_runs(project.engine, "recipe", "r")
    assert [r["id"] for r in runs] == [bad, ok]
    assert runs[1]["status"] == "SUCCESS" and runs[1]["details"] == {"type": "t", "rows": 3}
    assert runs[0]["status"] == "FAILED" and runs[0]["error"] == "boom"
    assert runs[0]["ended"] >= runs[0]["started"]
    assert project.runs("recipe", limit=1)[0]["id"] == bad
    # Times say they are UTC, although SQLite keeps no offset.
    started = dt.datetime.fromisoformat(runs[0]["started"])
    assert started.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 600


def test_non_string_column_labels_keep_their_values(project):
    ds = project.dataset("d", create=True)
    ds.write(pd.DataFrame(np.arange(6).reshape(3, 2)))
    assert ds.columns == ["0", "1"]
    assert ds.read()["1"].tolist() == [1, 3, 5]
    ds.append(pd.DataFrame({0: [6], 1: [7]}))
    assert ds.read()["0"].tolist() == [0, 2, 4, 6]


def test_declare_a_folder_and_a_refused_declaration(project):
    project.declare("folders", "imgs")
    assert project.folder("imgs").root == project.dir / "imgs"
    with pytest.raises(DescriptorError, match="/folders/bad/path"):
        project.declare("folders", "bad", {"path": ""})
    assert "bad" not in project.config["folders"]
    project.declare("datasets", "after")  # the next save still works
    assert set(json.loads(project.config_path.read_text())["datasets"]) == {"after"}



def test_table_creation_waits_for_another_writer(tmp_path):
    """Regression: a process creating the tables while another wrote failed "database is locked"."""
    import threading
    import time

    from labelloop.project.db import create_engine, create_host_tables

    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    other.execute("CREATE TABLE elsewhere (x INTEGER)")
    errors: list[BaseException] = []
    engine = create_engine(f"sqlite:///{path}")
    asking = threading.Event()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _asks_for_the_lock(conn, cursor, statement, *args):
        if statement.startswith("BEGIN IMMEDIATE"):
            asking.set()

    def create():
        try:
            create_host_tables(engine)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    assert asking.wait(60)
    # The creator is inside SQLite's BEGIN IMMEDIATE (its busy handler, waiting for the other
    # writer) once its innermost Python frame is the DB-API call that sent it.
    deadline = time.monotonic() + 60
    while sys._current_frames()[thread.ident].f_code.co_name != "do_execute":
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    other.execute("COMMIT")
    thread.join(timeout=60)
    other.close()
    assert errors == []
    assert {"ll_datasets", "elsewhere"} <= set(db_snapshot(path))


# ---------------------------------------------------------------- column chunk files
def chunk_dirs(project: Project) -> set[str]:
    root = project.dir / "data"
    return {d.name for d in root.iterdir()} if root.is_dir() else set()


def test_column_chunks_are_files_and_a_replaced_generation_is_deleted(project):
    ds = project.dataset("big", create=True)
    ds.write(frame(25), storage="columns")
    first = chunk_dirs(project)
    assert len(first) == 1 and list((project.dir / "data").glob("*/*.arrow"))
    ds.append(frame(3, start=25))  # a new chunk file in the same generation
    assert len(list((project.dir / "data" / first.pop()).glob("*.arrow"))) == 2
    ds.write(frame(4), storage="columns")
    assert len(chunk_dirs(project)) == 1 and ds.read()["id"].tolist() == [0, 1, 2, 3]
    ds.to_rows()  # converted to rows: no chunk files left
    assert chunk_dirs(project) == set() and ds.count() == 4


def test_a_rolled_back_columns_write_leaves_the_old_data_and_its_files_are_swept(project,
                                                                              monkeypatch):
    ds = project.dataset("big", create=True)
    ds.write(frame(5), storage="columns")
    before = chunk_dirs(project)
    with pytest.raises(RuntimeError):
        with project.write_transaction() as conn:
            ds.write(frame(9), conn=conn, storage="columns")
            raise RuntimeError("the caller failed after writing")
    assert ds.read()["id"].tolist() == list(range(5))
    orphan = chunk_dirs(project) - before
    assert len(orphan) == 1  # still young: it could be another process's write in progress
    monkeypatch.setattr(datasets_mod, "SWEEP_GRACE", -1)
    ds._sweep()  # what every write does first
    assert chunk_dirs(project) == before and ds.read()["id"].tolist() == list(range(5))


def test_reading_a_generation_swept_meanwhile_is_a_clear_conflict(project, monkeypatch):
    monkeypatch.setattr(datasets_mod, "CHUNK_ROWS", 2)  # 5 rows: three chunk files
    ds = project.dataset("big", create=True)
    ds.write(frame(5), storage="columns")
    chunks = ds.iter_chunks(2)
    assert len(next(chunks)) == 2
    project.dataset("big").write(frame(6), storage="columns")  # replaced and swept
    with pytest.raises(ConflictError, match="replaced while being read"):
        list(chunks)
