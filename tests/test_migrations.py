"""Schema migrations: new databases at head, older databases upgraded, plugins' own histories.

tests/fixtures/project-16d321c is the tabular demo project made by revision 16d321c (before
migrations existed) with four labels and one skip by `alice`, through its JSON API.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from labelloop.migrations import HOST, current, histories, host_history, upgrade
from labelloop.project import Project, write_transaction
from labelloop.project import db as host_db

FIXTURE = Path(__file__).parent / "fixtures" / "project-16d321c"

# On PostgreSQL the projects here start from empty databases, as a user's do: these tests
# are about what the migrations build (the other tests' databases are copies of a template).
pytestmark = pytest.mark.empty_database


def _schema_drift(conn: sa.Connection, *metas: sa.MetaData) -> list:
    """What differs between the database and the live table definitions (their tables only)."""
    live = sa.MetaData()
    for meta in metas:
        for table in meta.sorted_tables:
            table.to_metadata(live)
    ctx = MigrationContext.configure(conn, opts={
        "compare_type": False,  # JSON vs TEXT and the like are dialect renderings, not drift
        "include_name": lambda name, kind, parent: kind != "table" or name in live.tables})
    return [d for d in compare_metadata(ctx, live)]


def test_a_new_project_is_created_at_the_host_head(make_project):
    from labelloop import webhooks

    project = make_project()
    with project.engine.connect() as conn:
        assert current(conn, host_history()) == host_history().head()
        # The migrations build exactly what the code defines: a table or column added to
        # labelloop.project.db without a new revision fails here.
        assert _schema_drift(conn, host_db.metadata, webhooks.metadata) == []


def test_a_new_project_is_created_at_every_head(make_project, run_cli):
    from labeling import engine, setaside
    from labeling.quality import consensus
    from labeling.similarity import store

    project = make_project()
    plugin = [h for h in histories(project.registry) if h.name != HOST]
    assert [h.name for h in plugin] == ["ml-assisted-labeling"]
    with project.engine.connect() as conn:
        assert current(conn, plugin[0]) == plugin[0].head() == "lb0006"
        # The plugin's history builds exactly what its code defines.
        assert _schema_drift(conn, engine.metadata, setaside.metadata, store.metadata,
                             consensus.metadata) == []
    with write_transaction(project.engine) as conn:  # upgrading again does nothing
        assert upgrade(conn, plugin[0]) == ("lb0006", "lb0006")
    out = run_cli(project.dir, "db", "current").stdout
    assert "needs" not in out and out.count("up to date") == 2, out


def test_columns_and_indexes_an_early_database_lacks_are_added_by_a_revision(make_project):
    """What the engine used to add itself when it opened an early database (lb0004)."""
    project = make_project()
    plugin = next(h for h in histories(project.registry) if h.name != HOST)
    with write_transaction(project.engine) as conn:
        conn.execute(sa.text("DROP INDEX ux_lb_queue_item"))
        conn.execute(sa.text("ALTER TABLE lb_queue DROP COLUMN model_version"))
        conn.execute(sa.text("ALTER TABLE lb_apps DROP COLUMN prep"))
        conn.execute(sa.text(f"UPDATE {plugin.version_table} SET version_num = 'lb0003'"))
    assert Project.open(project.dir, database_url=project.database_url).upgrade_schema() == [
        ("ml-assisted-labeling", "lb0003", "lb0006")]
    with project.engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert "prep" in {c["name"] for c in inspector.get_columns("lb_apps")}
        assert "model_version" in {c["name"] for c in inspector.get_columns("lb_queue")}
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("lb_queue")}
        assert indexes.get("ux_lb_queue_item") == ["qid", "item_id"], indexes


def test_reservations_are_keyed_by_annotator_and_kept_by_a_revision(make_project):
    """lb0005 (overlap): one item held by several annotators; the reservations are kept."""
    from labeling import engine, setaside
    from labeling.similarity import store

    project = make_project()
    plugin = next(h for h in histories(project.registry) if h.name != HOST)
    with write_transaction(project.engine) as conn:  # as lb0004 left them
        conn.execute(sa.text("DROP TABLE lb_item_answers"))
        conn.execute(sa.text("DROP TABLE lb_reservations"))
        conn.execute(sa.text(
            "CREATE TABLE lb_reservations (app INTEGER NOT NULL, item_id TEXT NOT NULL, "
            "annotator VARCHAR(200) NOT NULL, until FLOAT NOT NULL, PRIMARY KEY (app, item_id))"))
        conn.execute(sa.text("CREATE INDEX ix_lb_reservations_user ON lb_reservations "
                             "(annotator, app)"))
        conn.execute(sa.text("INSERT INTO lb_reservations VALUES (1, 'x', 'ann', 99.5)"))
        conn.execute(sa.text(f"UPDATE {plugin.version_table} SET version_num = 'lb0004'"))
    assert Project.open(project.dir, database_url=project.database_url).upgrade_schema() == [
        ("ml-assisted-labeling", "lb0004", "lb0006")]
    with write_transaction(project.engine) as conn:
        inspector = sa.inspect(conn)
        assert inspector.get_pk_constraint("lb_reservations")["constrained_columns"] == [
            "app", "item_id", "annotator"]
        assert inspector.get_pk_constraint("lb_item_answers")["constrained_columns"] == [
            "app", "item_id"]
        assert _schema_drift(conn, engine.metadata, setaside.metadata, store.metadata) == []
        conn.execute(sa.text("INSERT INTO lb_reservations VALUES (1, 'x', 'bob', 99.5)"))
        assert conn.execute(sa.text("SELECT annotator, until FROM lb_reservations ORDER BY 1")
                            ).all() == [("ann", 99.5), ("bob", 99.5)]


def test_a_database_without_version_table_is_stamped_and_keeps_its_rows(make_project):
    project = make_project()
    project.variables.set("kept", 42)
    with write_transaction(project.engine) as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    reopened = Project.open(project.dir, database_url=project.database_url)
    with reopened.engine.connect() as conn:
        assert current(conn, host_history()) == host_history().head()
    assert reopened.variables.get("kept") == 42


def test_an_unknown_revision_is_refused_clearly(make_project, run_cli):
    project = make_project()
    res = run_cli(project.dir, "db", "upgrade", "--history", "labelloop", "--revision", "zz99",
                  check=False)
    assert res.returncode != 0
    assert "unknown revision 'zz99' for labelloop" in res.stderr
    res = run_cli(project.dir, "db", "upgrade", "--history", "nope", check=False)
    assert res.returncode != 0 and "no migration history 'nope'" in res.stderr


@pytest.fixture
def old_project(tmp_path) -> Path:
    """A copy of the fixture project made before migrations existed (SQLite, as it was made)."""
    assert (FIXTURE / "labelloop.db").is_file(), f"the fixture database is missing in {FIXTURE}"
    target = tmp_path / "old"
    shutil.copytree(FIXTURE, target)
    return target


def test_a_project_made_before_migrations_upgrades_and_keeps_working(old_project, run_cli,
                                                                        serve):
    env = {"LABELLOOP_DATABASE_URL": ""}  # the fixture's own SQLite file, on every run
    before = run_cli(old_project, "db", "current", env=env).stdout
    assert "ml-assisted-labeling" in before and "needs `labelloop db upgrade`" in before
    out = run_cli(old_project, "db", "upgrade", env=env).stdout
    assert "ml-assisted-labeling: - -> lb0006" in out
    after = run_cli(old_project, "db", "current", env=env).stdout
    assert "needs" not in after and after.count("up to date") == 2
    # lb0002: the builder lease left lb_apps for a lease table of its own, rows kept
    with sa.create_engine(f"sqlite:///{old_project / 'labelloop.db'}").connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("lb_apps")}
        assert not columns & {"builder", "lease_until", "builder_host", "builder_pid"}
        assert sa.inspect(conn).has_table("lb_builder_leases")
        # lb0003: the annotator indexes lead with the annotator (no index but the key by app)
        for table, name, columns in (("lb_reservations", "ix_lb_reservations_user",
                                      ["annotator", "app"]),
                                     ("lb_annotations", "ix_lb_annotations_user",
                                      ["annotator", "app", "label_id"])):
            indexes = {i["name"]: i["column_names"] for i in sa.inspect(conn).get_indexes(table)}
            assert indexes.get(name) == columns, indexes
            assert not [n for n, cols in indexes.items() if cols[0] == "app"], indexes
        assert conn.exec_driver_sql("SELECT name FROM lb_apps").scalars().all() == [
            "label-iris"]

    server = serve(old_project, env=env)
    user = {"X-Labelloop-User": "alice"}
    stats = server.get("/api/v1/webapps/label-iris/stats", headers=user).json()
    assert (stats["labeled"], stats["skipped"]) == (4, 1)
    notes = server.get("/api/v1/webapps/label-iris/annotations", headers=user).json()
    old_ids = {a["id"] for a in notes["annotations"]}
    assert len(old_ids) == 5
    batch = server.get("/api/v1/webapps/label-iris/batch?size=3", headers=user).json()
    new_id = next(i["id"] for i in batch["items"] if i["id"] not in old_ids)
    res = server.post("/api/v1/webapps/label-iris/labels",
                      {"id": new_id, "label": "setosa"}, headers=user).json()
    assert res["label_id"] == 6 and res["stats"]["labeled"] == 5
    server.stop()
    labels = Project.open(old_project).dataset("labels").read()
    assert len(labels) == 5 and new_id in set(labels["data_id"])


def test_a_server_brings_an_old_project_to_every_head_when_it_starts(old_project, run_cli,
                                                                   serve):
    env = {"LABELLOOP_DATABASE_URL": ""}
    server = serve(old_project, env=env)
    assert "ml-assisted-labeling upgraded from - to lb0006" in server.log()
    stats = server.get("/api/v1/webapps/label-iris/stats",
                       headers={"X-Labelloop-User": "alice"}).json()
    assert (stats["labeled"], stats["skipped"]) == (4, 1)
    server.stop()
    after = run_cli(old_project, "db", "current", env=env).stdout
    assert "needs" not in after and after.count("up to date") == 2, after


REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "nt0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("nt_notes", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("text", sa.Text, nullable=False))


def downgrade():
    op.drop_table("nt_notes")
'''


def test_a_third_party_plugin_ships_its_own_history(make_project, tmp_path):
    versions = tmp_path / "notes_versions"
    versions.mkdir()
    (versions / "nt0001_notes.py").write_text(REVISION)

    class NotesPlugin:
        @staticmethod
        def register_migrations(register):
            register("notes", versions)

    from labelloop.hookspecs import hookimpl

    NotesPlugin.register_migrations = hookimpl(NotesPlugin.register_migrations)
    project = make_project()
    project.registry.register_plugin("notes", NotesPlugin)
    notes = next(h for h in histories(project.registry) if h.name == "notes")
    assert notes.version_table == "alembic_version_notes"
    with write_transaction(project.engine) as conn:
        assert upgrade(conn, notes) == (None, "nt0001")
        conn.execute(sa.text("INSERT INTO nt_notes (id, text) VALUES (1, 'kept')"))
    with project.engine.connect() as conn:
        assert current(conn, notes) == "nt0001"
        assert current(conn, host_history()) == host_history().head()  # histories don't mix
        assert conn.execute(sa.text("SELECT text FROM nt_notes")).scalar() == "kept"


def test_the_host_migrates_without_importing_the_labeling_plugin(make_project):
    """Opening a project brings the host's history to its head without loading any plugin."""
    import subprocess
    import sys

    project = make_project()
    with write_transaction(project.engine) as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    code = ("import sys; from labelloop.project import Project; "
            f"p = Project.open({str(project.dir)!r}, database_url={project.database_url!r}); "
            "p.engine; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'labeling'); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with project.engine.connect() as conn:
        assert current(conn, host_history()) == host_history().head()


def test_declared_heads_are_alembics_and_a_project_at_them_opens_without_alembic(make_project):
    """The heads the histories declare (the host's `HOST_HEAD`, the plugin's `head=`) are the
    ones Alembic computes: a revision added without bumping them fails here. A project at
    every head is opened, and its schema checked, without importing Alembic."""
    import subprocess
    import sys

    project = make_project()
    for history in histories(project.registry):
        assert history.declared_head == history.head(), (
            f"{history.name}: declared head {history.declared_head!r}, Alembic's is "
            f"{history.head()!r}: bump the declared one with the new revision")
    code = ("import sys; from labelloop.project import Project; "
            f"p = Project.open({str(project.dir)!r}, database_url={project.database_url!r}); "
            "p.engine; p.upgrade_schema(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


SCHEMA_CHANGES = re.compile(r"create_all|drop_all|ALTER\s+TABLE|CREATE\s+(UNIQUE\s+)?INDEX",
                            re.IGNORECASE)


def test_no_table_is_made_or_changed_outside_the_migrations():
    """Alembic alone makes and changes tables: no `create_all`, `ALTER TABLE` or `CREATE
    INDEX` in the code outside the migration histories (host and plugins)."""
    lib = Path(__file__).resolve().parents[1] / "python-lib"
    found = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        if "migrations" in rel.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if SCHEMA_CHANGES.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == [], "\n".join(found)
