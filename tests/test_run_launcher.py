"""Scenario runs of a server fork from a process that imported their modules once.

tests/plugins/preload-probe names a marker module through `register_preload_modules` (and one
that does not exist); its step records, from inside the run, its pid, its process group, the
pid that imported the marker, and what it got of the server's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import wait_for

from labelloop.scenarios.launcher import HOST_MODULES, preload_modules

PROBE = Path(__file__).parent / "plugins" / "preload-probe"


def _finished(project, scenario: str, count: int) -> list[dict]:
    runs = project.runs("scenario", scenario)
    return runs if len(runs) >= count and runs[0]["status"] != "RUNNING" else []


def test_the_plugins_name_the_modules_runs_preload(make_project):
    project = make_project(config={"plugin_dirs": [str(PROBE)]})
    names = preload_modules(project.registry)
    assert {"preload_probe_marker", "no_such_module_anywhere"} <= set(names)
    assert "skops.io" in names and "labeling.training" in names  # the built-in plugin's
    assert "labelloop.cli" in HOST_MODULES


def test_served_runs_fork_from_a_process_that_imported_their_modules(make_project, serve):
    project = make_project(config={
        "plugin_dirs": [str(PROBE)],
        "scenarios": {"probe": {"steps": [{"step": "preload-probe/record-process"}]}}})
    pythonpath = os.pathsep.join(p for p in (str(PROBE / "marker"), os.environ.get("PYTHONPATH"))
                                 if p)
    server = serve(project.dir, "--period", "0.2",
                   env={"PYTHONPATH": pythonpath, "PRELOAD_PROBE_ENV": "from the server"})
    seen = []
    for count in (1, 2):
        resp = server.post("/api/v1/scenarios/probe/run", {})
        assert resp.status == 202, resp.text
        runs = wait_for(lambda count=count: _finished(project, "probe", count), timeout=60,
                        what=f"run {count} of the probe scenario")
        assert runs[0]["status"] == "SUCCESS", (runs[0], server.log()[-2000:])
        seen.append(project.variables.get("run_process"))
    for run in seen:
        assert run["pid"] not in (server.proc.pid, run["marker_imported_in"])  # preloaded
        assert run["pgid"] == run["pid"]  # its own process group: the server's Ctrl-C spares it
        assert run["probe_env"] == "from the server" and run["database_url_set"]
        assert Path(run["cwd"]) == Path(os.getcwd())
    # One process imported the marker; each run is a process of its own, forked from it.
    assert seen[0]["marker_imported_in"] == seen[1]["marker_imported_in"]
    assert seen[0]["pid"] != seen[1]["pid"]
