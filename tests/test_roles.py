"""Roles: `labelloop token add NAME --role R`, a route spec's `"role"` (403 before the
handler, nothing written), `labelloop.web.role_of`, and everyone admin without tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_project

from labelloop.errors import LabelloopError
from labelloop.migrations import current, host_history
from labelloop.project import Project
from labelloop.project.db import write_transaction
from labelloop.web.auth import add_token, list_tokens, role_of
from labelloop.web.webapps import normalise_routes

ROUTES_PLUGIN = Path(__file__).resolve().parent / "plugins" / "routes-plugin"
PIN = "/api/v1/webapps/notes/notes/pin"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, serve_module, run_cli):
    """One server with the sample notes webapp and the routes plugin; three tokens."""
    project = create_project(tmp_path_factory.mktemp("roles") / "p",
                             {"plugin_dirs": [str(ROUTES_PLUGIN)],
                              "webapps": {"notes": {"type": "sample/notes"}}})
    tokens = {name: run_cli(project.dir, "token", "add", name, *role).stdout.strip()
              for name, role in (("ann", ()), ("rita", ("--role", "reviewer")),
                                 ("boss", ("--role", "admin")))}
    return project, serve_module(project.dir, "--no-scheduler"), tokens


def pinned(project: Project) -> list:
    return project.variables.get("notes.notes.pinned") or []


def test_token_add_takes_a_role_and_token_list_shows_it(make_project, run_cli):
    project = make_project()
    run_cli(project.dir, "token", "add", "ann")
    out = run_cli(project.dir, "token", "add", "rita", "--role", "reviewer")
    assert "role reviewer" in out.stderr
    listed = run_cli(project.dir, "token", "list").stdout
    header, *rows = listed.strip().splitlines()
    assert header.split() == ["ID", "USER", "ROLE", "CREATED"]
    assert [r.split()[1:3] for r in rows] == [["ann", "annotator"], ["rita", "reviewer"]]

    bad = run_cli(project.dir, "token", "add", "eve", "--role", "boss", check=False)
    assert bad.returncode != 0 and bad.stdout == ""
    assert "unknown role 'boss': use one of annotator, reviewer, admin" in bad.stderr
    assert [t["user"] for t in list_tokens(project)] == ["ann", "rita"]  # nothing written

    # A user has one role: a second token keeps it, a role given moves all the user's tokens.
    add_token(project, "rita")
    assert [t["role"] for t in list_tokens(project) if t["user"] == "rita"] == ["reviewer"] * 2
    add_token(project, "rita", "admin")
    assert [t["role"] for t in list_tokens(project) if t["user"] == "rita"] == ["admin"] * 3
    assert role_of(project.engine, "rita") == "admin"
    assert role_of(project.engine, "ann") == "annotator"
    assert role_of(project.engine, "nobody") == "annotator"  # the project has tokens


def test_without_tokens_everyone_is_admin_and_may_call_every_route(make_project, serve):
    project = make_project(config={"plugin_dirs": [str(ROUTES_PLUGIN)],
                                   "webapps": {"notes": {"type": "sample/notes"}}})
    assert role_of(project.engine, "zoe") == "admin"
    srv = serve(project.dir, "--no-scheduler")
    zoe = {"X-Labelloop-User": "zoe"}
    assert srv.get("/api/v1/webapps/notes/whoami", headers=zoe).json() == {
        "user": "zoe", "role": "admin"}
    r = srv.post(PIN, {"text": "local"}, headers=zoe)
    assert r.status == 200 and r.json() == {"pinned": 1, "by": "zoe"}
    assert pinned(project) == ["local"]
    assert srv.get("/api/v1/audit", headers=zoe).json() == {"audited_by": "zoe"}


def test_a_route_beyond_the_callers_role_is_refused_with_403_and_writes_nothing(site):
    project, srv, tokens = site
    before = pinned(project)
    r = srv.post(PIN, {"text": "sneaky"}, headers=bearer(tokens["ann"]))
    assert r.status == 403
    assert r.json() == {"error": "ann is an annotator; POST notes/pin needs the reviewer role "
                                 "(labelloop token add ann --role reviewer)"}
    # The role is checked before the payload: a bad body is still a 403, not a 400.
    assert srv.post(PIN, {"nope": 1}, headers=bearer(tokens["ann"])).status == 403
    assert pinned(project) == before

    r = srv.post(PIN, {"text": "by rita"}, headers=bearer(tokens["rita"]))
    assert r.status == 200 and r.json()["by"] == "rita"
    assert srv.post(PIN, {"text": "by boss"}, headers=bearer(tokens["boss"])).status == 200
    assert pinned(project) == [*before, "by rita", "by boss"]
    # Routes without a role stay open to every role.
    assert srv.post("/api/v1/webapps/notes/notes", {"text": "mine"},
                    headers=bearer(tokens["ann"])).status == 200


def test_handlers_learn_the_callers_role_and_plugin_routes_take_a_role(site):
    _project, srv, tokens = site
    for user, role in (("ann", "annotator"), ("rita", "reviewer"), ("boss", "admin")):
        assert srv.get("/api/v1/webapps/notes/whoami", headers=bearer(tokens[user])).json() == \
            {"user": user, "role": role}
    r = srv.get("/api/v1/audit", headers=bearer(tokens["rita"]))
    assert r.status == 403 and r.json()["error"] == (
        "rita is a reviewer; GET /audit needs the admin role (labelloop token add rita --role "
        "admin)")
    assert srv.get("/api/v1/audit", headers=bearer(tokens["boss"])).json() == {
        "audited_by": "boss"}


def test_the_openapi_document_says_which_role_a_route_needs(site):
    _project, srv, _tokens = site
    doc = srv.get("/api/v1/openapi.json").json()
    pin = doc["paths"]["/api/v1/webapps/notes/notes/pin"]["post"]
    assert pin["x-labelloop-role"] == "reviewer"
    assert "Needs the reviewer role" in pin["description"]
    assert "role" in pin["responses"]["403"]["description"]
    assert "x-labelloop-role" not in doc["paths"]["/api/v1/webapps/notes/notes"]["post"]


def test_a_route_spec_with_an_unknown_role_is_refused():
    with pytest.raises(LabelloopError, match="role 'boss' must be one of annotator, reviewer, "
                                             "admin"):
        normalise_routes("w", {("GET", "x"): {"handler": lambda p, u: {}, "role": "boss"}})


def test_tokens_made_before_roles_become_annotators(make_project):
    project = make_project()
    add_token(project, "old")
    with write_transaction(project.engine) as conn:
        conn.execute(sa.text("ALTER TABLE ll_tokens DROP COLUMN role"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'll0001'"))
    reopened = Project.open(project.dir, database_url=project.database_url)
    with reopened.engine.connect() as conn:
        assert current(conn, host_history()) == host_history().head() == "ll0002"
    assert [(t["user"], t["role"]) for t in list_tokens(reopened)] == [("old", "annotator")]
