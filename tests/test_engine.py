"""The labeling engine in-process: ids, queue order, sessions, reservations, actions, storage."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from PIL import Image

from labeling.datatypes import content_ids, json_lines
from labeling.engine import LabelingEngine, annotations_table, session_variable
from labeling.settings import parse_settings
from labelloop.errors import ConfigError, LabelloopError, NotFoundError
from labelloop.project import ManualClock, Project

CATS = {"cat": "a cat", "dog": None, "bird": "flies"}


def pool_frame(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"num": np.arange(n), "word": [f"w{i}" for i in range(n)],
                         "x": rng.random(n)})


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    p.dataset("pool", create=True).write(pool_frame())
    return p


def make_engine(project, webapp="w", data_type="tabular", clock=None, **settings
                ) -> LabelingEngine:
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "queries_ds": "queries", "max_reserved": 100,
              **settings}
    cfg = parse_settings(config, data_type, webapp, project)
    return LabelingEngine(project, cfg, check_interval=0, background=False, clock=clock)


def write_queries(project, frame: pd.DataFrame, uncertainty) -> None:
    q = frame.copy()
    q["uncertainty"] = uncertainty
    q["prediction"] = "dog"
    q["confidence"] = 1 - np.asarray(uncertainty) / 2
    q = q.iloc[np.argsort(-np.asarray(uncertainty), kind="stable")]
    project.dataset("queries", create=True).write(q)
    project.variables.incr(session_variable("queries"))


def ids_of(batch) -> list[str]:
    return [i["id"] for i in batch["items"]]


def row_ids(frame: pd.DataFrame) -> list[str]:
    return content_ids(json_lines(frame))


# ---------------------------------------------------------------- ids and data types

def test_content_ids_do_not_depend_on_storage(project):
    rows = project.dataset("pool")
    cols = project.dataset("pool_cols", create=True)
    cols.write(pool_frame(), storage="columns")
    e1, e2 = make_engine(project, "a"), make_engine(project, "b", unlabeled="pool_cols")
    all1 = set(ids_of(e1.batch("u", 100)))
    all2 = set(ids_of(e2.batch("u", 100)))
    assert rows.storage == "rows" and cols.storage == "columns"
    assert all1 == all2 and len(all1) == 30


def test_id_column_and_rendering_of_shown_columns(project):
    e = make_engine(project, id_column="word", columns=["x", "num"])
    item = e.batch("u", 1)["items"][0]
    assert item["id"].startswith("w")
    assert [k for k, _v in item["data"]["fields"]] == ["x", "num"]
    n = int(item["id"][1:])
    assert item["data"]["fields"][1][1] == n


def test_duplicate_rows_are_one_item(project):
    df = pool_frame(5)
    project.dataset("dups", create=True).write(pd.concat([df, df]))
    e = make_engine(project, unlabeled="dups")
    assert e.stats("u")["total"] == 5


def test_text_items(project):
    project.dataset("texts", create=True).write(pd.DataFrame(
        {"title": ["a", "b"], "body": ["line one\nline two", "other"]}))
    e = make_engine(project, data_type="text", unlabeled="texts", text_column="body")
    texts = {i["data"]["text"] for i in e.batch("u", 5)["items"]}
    assert texts == {"line one\nline two", "other"}


def test_a_column_named_text_is_the_text_even_when_other_columns_are_shown(project):
    project.dataset("mails", create=True).write(pd.DataFrame(
        {"source": ["mail", "chat"], "text": ["hello there", "see you"]}))
    e = make_engine(project, data_type="text", unlabeled="mails", columns=["source"])
    assert e.cfg.text_column == "text"
    assert {i["data"]["text"] for i in e.batch("u", 5)["items"]} == {"hello there", "see you"}


def test_engine_tables_are_created_under_the_write_lock(project):
    # Another process holds the write lock while this one opens the engine: creating the
    # tables waits for it instead of failing with "database is locked".
    import sqlite3
    import threading

    other = sqlite3.connect(project.dir / "labelloop.db", timeout=30, isolation_level=None,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    timer.start()
    e = make_engine(project)
    assert e.stats("u")["total"] == len(pool_frame())
    timer.join()  # on PostgreSQL the engine did not have to wait for it
    other.close()


def folder_project(project, kind="image"):
    root = project.dir / "media"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(buf, format="PNG")
        (root / ("sub" if i % 2 else "") / f"img{i}.png").write_bytes(buf.getvalue())
    (root / "notes.txt").write_text("not an image")
    project.declare("folders", "media", {"path": "media"})


def test_image_items_paths_data_urls_and_labels_rows(project):
    folder_project(project)
    e = make_engine(project, data_type="image", unlabeled="media")
    items = e.batch("u", 10)["items"]
    assert sorted(i["id"] for i in items) == ["img0.png", "img2.png", "sub/img1.png",
                                              "sub/img3.png"]
    # The file comes from the webapp's media route (a versioned URL), not inside the batch.
    assert all(i["data"]["media"].startswith("media?id=") for i in items)
    assert e.dtype.media("sub/img1.png").content_type == "image/png"
    e.label("u", "sub/img1.png", "cat")
    labels = project.dataset("labels").read()
    assert list(labels.columns) == ["path", "label", "label_id"]
    assert labels["path"].tolist() == ["sub/img1.png"]
    with pytest.raises(LabelloopError, match="escapes"):
        e.label("u", "../proj/project.json", "cat")
    with pytest.raises(LabelloopError, match="escapes"):
        e.skip("u", "sub/../../x.png")
    assert e.stats("u")["labeled"] == 1
    assert len(project.dataset("metadata").read()) == 1


# ---------------------------------------------------------------- queue order and sessions

def test_random_order_is_seeded_and_stable(project):
    a = ids_of(make_engine(project, "a", seed=3).batch("u", 30))
    b = ids_of(make_engine(project, "b", seed=3).batch("u", 30))
    c = ids_of(make_engine(project, "c", seed=4).batch("u", 30))
    assert a == b and a != c and len(set(a)) == 30


def test_queries_order_most_uncertain_first_skipping_labeled(project):
    df = pool_frame()
    unc = np.linspace(0.0, 0.9, 30)
    write_queries(project, df, unc)
    e = make_engine(project)
    expected = row_ids(df.iloc[::-1])
    first = e.batch("u", 5)
    assert ids_of(first) == expected[:5]
    assert first["items"][0]["suggestion"] == {"label": "dog", "confidence": pytest.approx(0.55)}
    halting = [i["halting"] for i in first["items"]]
    assert halting[0] == 1.0 and all(0 <= h <= 1 for h in halting)
    assert halting == sorted(halting, reverse=True)
    e.label("u", expected[0], "cat")
    e.skip("u", expected[1])
    assert ids_of(e.batch("v", 3)) == expected[5:8]
    cfg = e.config()
    assert cfg["al_enabled"] and cfg["session"] == 1
    assert cfg["halting"]["low"] < cfg["halting"]["high"]


def test_new_session_is_followed_without_restart(project):
    df = pool_frame()
    write_queries(project, df, np.linspace(0.0, 0.9, 30))
    e = make_engine(project)
    e.label("u", row_ids(df.iloc[[29]])[0], "cat")
    assert ids_of(e.batch("u", 1)) == row_ids(df.iloc[[28]])
    write_queries(project, df, np.linspace(0.9, 0.0, 30))  # the other way round now
    e.background = True
    deadline = time.time() + 20
    while e.config()["queue_session"] != 2 and time.time() < deadline:
        e.wait_idle()
    assert e.config()["queue_session"] == 2
    assert ids_of(e.batch("w", 2)) == row_ids(df.iloc[[0, 1]])
    assert e.stats("u")["session"] == 2


def test_the_queue_follows_the_samplers_rank_over_uncertainty(project):
    """A batch strategy's picks lead the queries although they are not the most uncertain:
    the queue serves `query_rank` order, and each item keeps its own true uncertainty."""
    df = pool_frame()
    unc = np.linspace(0.9, 0.0, 30)  # row k has the k-th highest uncertainty
    q = df.copy()
    q["uncertainty"], q["prediction"], q["confidence"] = unc, "dog", 0.5
    picks = [7, 3, 12]
    order = picks + [k for k in range(30) if k not in picks]
    q = q.iloc[order].reset_index(drop=True)
    q["query_rank"] = np.arange(30)
    project.dataset("queries", create=True).write(q)
    project.variables.incr(session_variable("queries"))
    e = make_engine(project)
    items = e.batch("u", 5)["items"]
    assert [i["id"] for i in items] == row_ids(df.iloc[order[:5]])
    assert [i["uncertainty"] for i in items] == pytest.approx(unc[order[:5]])

    # Queries without the column (made elsewhere) are served most uncertain first (u still
    # holds 7, 3, 12, 0 and 1).
    project.dataset("queries").write(q.drop(columns=["query_rank"]))
    project.variables.incr(session_variable("queries"))
    e.refresh(wait=True)
    assert ids_of(e.batch("v", 3)) == row_ids(df.iloc[[2, 4, 5]])


def test_old_queue_served_while_another_builder_holds_the_lease(project):
    df = pool_frame()
    e = make_engine(project)
    before = ids_of(e.batch("u", 3))
    from labeling.engine import builder_leases_table as leases

    with project.write_transaction() as conn:  # a process of another machine is building
        conn.execute(sa.insert(leases).values(app=e.app_id, owner="elsewhere:1:x",
                                              acquired=time.time(), expires=time.time() + 60))
    write_queries(project, df, np.linspace(0.0, 0.9, 30))
    e.background = True
    e.refresh()
    e.wait_idle()
    assert ids_of(e.batch("u", 3)) == before  # still the previous order, own reservations
    with project.write_transaction() as conn:
        conn.execute(sa.delete(leases))
    e.refresh()
    e.wait_idle()
    assert ids_of(e.batch("x", 1)) == row_ids(df.iloc[[29]])


# ---------------------------------------------------------------- reservations

def test_reserved_items_go_to_one_annotator_until_they_expire(project):
    clock = ManualClock()
    e = make_engine(project, reservation_seconds=30, clock=clock)
    a = ids_of(e.batch("alice", 5))
    b = ids_of(e.batch("bob", 5))
    assert not set(a) & set(b)
    clock.advance(29)
    assert ids_of(e.batch("alice", 5)) == a  # a reload gets the same items back (renewed)
    clock.advance(29)
    assert not set(ids_of(e.batch("carol", 10))) & set(a)  # still alice's
    clock.advance(2)  # every item of a batch is reserved for the same 30 s
    assert set(ids_of(e.batch("carol", 10))) >= set(a)


def test_last_batch_and_done(project):
    e = make_engine(project)
    first = e.batch("u", 29)
    assert not first["is_last_batch"]
    last = e.batch("v", 5)
    assert len(last["items"]) == 1 and last["is_last_batch"] and not last["done"]
    for item_id in ids_of(first) + ids_of(last):
        e.label("u", item_id, "dog")
    end = e.batch("u", 5)
    assert end["items"] == [] and end["done"]
    assert end["stats"]["remaining"] == 0 and end["stats"]["labeled"] == 30


# ---------------------------------------------------------------- actions and storage

def test_label_skip_change_and_storage(project):
    e = make_engine(project)
    ids = ids_of(e.batch("ann", 3))
    r1 = e.label("ann", ids[0], "cat", "looks like a cat")
    r2 = e.skip("ann", ids[1], "blurry")
    r3 = e.label("ann", ids[2], "dog")
    assert r1["label_id"] < r2["label_id"] < r3["label_id"]
    assert r3["stats"] == {"labeled": 2, "skipped": 1, "total": 30, "remaining": 27,
                           "per_label": {"cat": 1, "dog": 1, "bird": 0}, "session": 0}
    labels = project.dataset("labels")
    meta = project.dataset("metadata")
    assert labels.columns == ["num", "word", "x", "label", "label_id"]
    assert meta.columns == ["date", "data_id", "comment", "session", "status", "annotator",
                            "label", "label_id"]
    assert sorted(labels.read()["label"]) == ["cat", "dog"]  # skipped: metadata only
    # change: same label id, same rows, updated in place
    again = e.label("ann", ids[0], "bird", "no, a bird")
    back = e.label("ann", ids[1], "dog")  # a skipped item labeled after all
    assert again["label_id"] == r1["label_id"] and back["label_id"] == r2["label_id"]
    lab, md = labels.read(), meta.read()
    assert len(lab) == 3 and len(md) == 3
    assert dict(zip(lab["label_id"], lab["label"], strict=True)) == {
        r1["label_id"]: "bird", r2["label_id"]: "dog", r3["label_id"]: "dog"}
    row = md[md["label_id"] == r1["label_id"]].iloc[0]
    assert (row["data_id"], row["comment"], row["status"], row["annotator"]) == (
        ids[0], "no, a bird", "LABELED", "ann")
    assert back["stats"]["per_label"] == {"cat": 0, "dog": 2, "bird": 1}
    assert back["stats"]["skipped"] == 0 and back["stats"]["labeled"] == 3
    e.skip("ann", ids[2])  # a label turned into a skip leaves the labels dataset
    assert len(labels.read()) == 2 and e.stats("ann")["per_label"]["dog"] == 1
    # labels dataset rows look like the pool's rows
    pool = project.dataset("pool").read()
    merged = lab.merge(pool, on=["num", "word"], suffixes=("", "_pool"))
    assert np.allclose(merged["x"], merged["x_pool"])


def test_history_newest_first_with_paging(project):
    e = make_engine(project)
    ids = ids_of(e.batch("ann", 6))
    made = [e.label("ann", i, "cat")["label_id"] for i in ids[:5]]
    e.label("other", ids[5], "dog")
    page = e.annotations("ann", limit=2)
    assert [a["label_id"] for a in page["annotations"]] == made[::-1][:2]
    nxt = e.annotations("ann", before=page["next_before"], limit=10)
    assert [a["label_id"] for a in nxt["annotations"]] == made[::-1][2:]
    first = nxt["annotations"][-1]
    assert first["id"] == ids[0] and first["label"] == "cat" and first["status"] == "LABELED"
    assert first["data"]["type"] == "tabular"


def test_multi_label(project):
    e = make_engine(project, multi_label=True)
    ids = ids_of(e.batch("u", 2))
    e.label("u", ids[0], ["bird", "cat"])
    r = e.label("u", ids[1], "dog")
    assert r["stats"]["per_label"] == {"cat": 1, "dog": 1, "bird": 1}
    labels = project.dataset("labels").read()
    assert sorted(labels["label"]) == ['["cat", "bird"]', '["dog"]']
    assert e.annotations("u")["annotations"][-1]["label"] == ["cat", "bird"]
    with pytest.raises(LabelloopError, match="unknown category 'fish'"):
        e.label("u", ids[0], ["cat", "fish"])


def test_per_annotator_labels(project):
    e = make_engine(project, labels_per_annotator=True)
    a = ids_of(e.batch("alice", 30))
    b = ids_of(e.batch("bob", 30))
    assert a == b
    for i in a[:10]:
        e.label("alice", i, "cat")
    e.label("bob", a[0], "dog")
    assert ids_of(e.batch("alice", 3)) == a[10:13]
    assert ids_of(e.batch("bob", 3)) == a[1:4]
    assert e.stats("alice")["labeled"] == 10 and e.stats("bob")["labeled"] == 1
    assert len(project.dataset("labels").read()) == 11


def test_shared_labels_leave_everyones_queue(project):
    clock = ManualClock()
    e = make_engine(project, reservation_seconds=10, clock=clock)
    ids = ids_of(e.batch("alice", 30))
    for i in ids[:10]:
        e.label("alice", i, "cat")
    clock.advance(11)  # alice's other reservations expire: bob may take those
    assert sorted(ids_of(e.batch("bob", 30))) == sorted(ids[10:])


# ---------------------------------------------------------------- bad input writes nothing

def written(project):
    with project.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(annotations_table)).scalar_one()
    return n, project.dataset("labels", create=True).count(), \
        project.dataset("metadata", create=True).count()


def _batch_route(engine):
    from labeling.api import build_routes
    from labelloop.web.webapps import normalise_routes

    return normalise_routes("w", build_routes(engine))[("GET", "batch")]


@pytest.mark.parametrize("call, error", [
    (lambda e, i: e.label("u", "nope", "cat"), NotFoundError),
    (lambda e, i: e.label("u", i, "fish"), LabelloopError),
    (lambda e, i: e.label("u", i, ["cat"]), LabelloopError),
    (lambda e, i: e.label("u", i, None), LabelloopError),
    (lambda e, i: e.label("u", 12, "cat"), LabelloopError),
    (lambda e, i: e.label("u", i, "cat", comment=5), LabelloopError),
    (lambda e, i: e.skip("u", ""), LabelloopError),
    # a batch size is checked once, by the `GET batch` route's schema (the host's check)
    (lambda e, i: _batch_route(e).check({"size": 0}), LabelloopError),
    (lambda e, i: _batch_route(e).check({"size": "20"}), LabelloopError),
    (lambda e, i: e.label("x" * 500, i, "cat"), LabelloopError),
    (lambda e, i: e.label("x" * 101, i, "cat"), LabelloopError),  # the host's rule: <= 100
    (lambda e, i: e.label("tab\tname", i, "cat"), LabelloopError),
    (lambda e, i: e.label("   ", i, "cat"), LabelloopError),
    (lambda e, i: e.batch(["u"], 1), LabelloopError),
])
def test_bad_input_is_refused_and_writes_nothing(project, call, error):
    e = make_engine(project)
    item = ids_of(e.batch("u", 1))[0]
    e.label("u", ids_of(e.batch("u", 2))[1], "dog")
    before = written(project)
    with pytest.raises(error) as info:
        call(e, item)
    assert 400 <= info.value.status < 500
    assert written(project) == before


def test_annotator_names_follow_the_hosts_rule(project):
    """The engine accepts exactly the names the host's server accepts (one rule)."""
    from labelloop.web import check_user_name

    e = make_engine(project)
    name = "n" * 100
    item = ids_of(e.batch(name, 1))[0]
    e.label(f" {name} ", item, "cat")  # stripped, as the server strips a header's name
    assert check_user_name(f" {name} ") == name
    assert [a["id"] for a in e.annotations(name)["annotations"]] == [item]
    with pytest.raises(LabelloopError, match="1 to 100 printable characters"):
        e.batch(name + "n", 1)


# ---------------------------------------------------------------- settings

@pytest.mark.parametrize("change, message", [
    ({"categories": {}}, "no categories"),
    ({"categories": {"only": None}}, "at least two"),
    ({"unlabeled": None}, "'unlabeled' is missing"),
    ({"unlabeled": "missing"}, "unknown dataset"),
    ({"labels_ds": "metadata"}, "both name 'metadata'"),
    ({"id_column": "nope"}, "id_column 'nope'"),
    ({"columns": ["num", "zzz"]}, "'zzz'"),
    ({"label_col_name": "num"}, "already has a column 'num'"),
    ({"label_col_name": "bad name!"}, "not valid"),
])
def test_settings_errors(project, change, message):
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", **change}
    with pytest.raises(ConfigError, match=message):
        parse_settings(config, "tabular", "w", project)


def test_settings_ranges_are_the_descriptors(project):
    """Types and ranges are checked once, by the webapp's declared params (validate_config)."""
    from labelloop.web.webapps import webapp_config

    spec = {"type": "ml-assisted-labeling/tabular-labeling",
            "params": {"unlabeled": "pool", "categories": CATS, "reservation_seconds": 0}}
    with pytest.raises(ConfigError, match="'reservation_seconds'.* must be between 1 and 86400, "
                                          "got 0"):
        webapp_config("w", spec, project.registry)


def test_settings_read_dss_key_value_lists_and_defaults(project):
    cfg = parse_settings({"unlabeled": "pool", "labels_ds": "l", "metadata_ds": "m",
                          "categories": [{"from": "a", "to": "first"}, {"from": "b"}]},
                         "tabular", "w", project)
    assert cfg.categories == {"a": "first", "b": None}
    assert (cfg.label_col, cfg.reservation_seconds, cfg.multi_label, cfg.per_annotator,
            cfg.max_reserved) == ("label", 120, False, False, 50)


def test_existing_labels_dataset_with_other_label_column_is_refused(project):
    project.dataset("labels", create=True).write(pd.DataFrame({"num": [1], "class": ["a"]}))
    with pytest.raises(ConfigError, match="no column 'label'"):
        make_engine(project)


def test_label_ids_are_not_reused_after_a_dataset_is_replaced(project):
    e = make_engine(project)
    ids = ids_of(e.batch("u", 3))
    first = e.label("u", ids[0], "cat")["label_id"]
    with project.write_transaction() as conn:
        conn.execute(sa.delete(annotations_table))
    assert e.label("u", ids[1], "cat")["label_id"] > first
    assert json.loads(json.dumps(e.stats("u")))["labeled"] >= 1


def test_queries_without_the_pools_columns_fall_back_to_random_order(project):
    project.dataset("queries", create=True).write(pd.DataFrame({"other": [1, 2],
                                                                "uncertainty": [0.5, 0.1]}))
    project.variables.incr(session_variable("queries"))
    e = make_engine(project)
    cfg = e.config()
    assert not cfg["al_enabled"]
    assert any("lacks the pool's column" in w for w in cfg["warnings"])
    assert len(e.batch("u", 30)["items"]) == 30


def test_changing_a_label_after_the_labels_dataset_was_rewritten_keeps_one_row(project):
    e = make_engine(project)
    ids = ids_of(e.batch("u", 3))
    first = e.label("u", ids[0], "cat")["label_id"]
    e.label("u", ids[1], "dog")
    labels = project.dataset("labels")
    labels.write(labels.read().iloc[::-1], storage="rows")  # someone rewrote it, rows renumbered
    e.label("u", ids[0], "bird")
    df = labels.read()
    assert df["label_id"].is_unique and len(df) == 2
    assert df.set_index("label_id").loc[first, "label"] == "bird"
