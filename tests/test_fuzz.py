"""Fuzzing the JSON API with schemathesis against a live server on a demo project.

`schemathesis run --checks all` generates valid and invalid requests for every operation of
`/api/v1/openapi.json` (a fixed seed and a bounded number of examples keep it deterministic and
short) and checks every answer: no 5xx, answers matching the documented schemas, valid requests
accepted, invalid ones rejected. Its stateful phase follows the OpenAPI links from `batch` to
`labels`, `skips`, `release` and `media`, so those routes get real item ids (not only 404s);
the 2xx answers there are counted and must be some. Run once without tokens (the tabular
demo) and once with a token (the image demo: folder items).

Run as a script (`python tests/test_fuzz.py`) to print the figures (requests per status).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from labeling import demo

pytestmark = pytest.mark.slow

SEED = 20251125
MAX_EXAMPLES = 30
ITEM_ROUTES = ("labels", "skips", "release", "media")
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or \
    shutil.which("schemathesis")


def fuzz(url: str, report_dir: Path, headers: dict | None = None,
         max_examples: int = MAX_EXAMPLES, seed: int = SEED) -> dict:
    """Run schemathesis against a server; `{"returncode", "output", "statuses", "requests"}`."""
    har = report_dir / "run.har"
    cmd = [SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json", "--checks", "all",
           "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
           "--phases", "examples,coverage,fuzzing,stateful", "--no-shrink", "--request-timeout", "30",
           "--suppress-health-check", "all", "--report", "har", "--report-har-path", str(har),
           "--output-truncate", "true", "--continue-on-failure"]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false",
           "HYPOTHESIS_STORAGE_DIRECTORY": str(report_dir / "hypothesis")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                          cwd=report_dir)
    statuses: collections.Counter = collections.Counter()
    item_ok: collections.Counter = collections.Counter()  # 2xx answers of the item routes
    if har.exists():
        for entry in json.loads(har.read_text())["log"]["entries"]:
            status = entry["response"]["status"]
            statuses[status] += 1
            route = urlsplit(entry["request"]["url"]).path.rsplit("/", 1)[-1]
            if route in ITEM_ROUTES and 200 <= status < 300:
                item_ok[route] += 1
    return {"returncode": proc.returncode, "output": proc.stdout + proc.stderr,
            "statuses": dict(sorted(statuses.items())), "requests": sum(statuses.values()),
            "item_2xx": dict(sorted(item_ok.items()))}


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    return demo.create_demo(tmp_path_factory.mktemp("fuzz") / "demo", "tabular", n=5)


@pytest.fixture(scope="module")
def image_demo(tmp_path_factory):
    return demo.create_demo(tmp_path_factory.mktemp("fuzz") / "digits", "image", n=5)


def _check(result: dict, item_routes: tuple[str, ...]) -> None:
    print(f"\nschemathesis: {result['requests']} requests, statuses {result['statuses']}, "
          f"2xx of the item routes {result['item_2xx']}")
    five = {s: n for s, n in result["statuses"].items() if s >= 500}
    assert not five, f"server errors {five}\n{result['output'][-6000:]}"
    assert result["returncode"] == 0, result["output"][-8000:]
    assert result["requests"] > 100
    # The routes that take an item were reached with real ids (through the OpenAPI links from
    # `batch`), not only answered 404. Which links the stateful phase follows is its random
    # choice among all the API's links, so it is asked of most of them, not of each one.
    reached = [r for r in item_routes if result["item_2xx"].get(r)]
    assert len(reached) * 2 > len(item_routes) and \
        sum(result["item_2xx"].values()) >= 10, f"item routes with a 2xx: {result['item_2xx']}"


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
def test_fuzzing_without_tokens_finds_nothing(demo_project, serve, tmp_path):
    server = serve(demo_project.dir, "--no-scheduler")
    _check(fuzz(server.url, tmp_path, headers={"X-Labelloop-User": "fuzzer"}),
           ("labels", "skips", "release"))


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
def test_fuzzing_with_a_token_finds_nothing(image_demo, serve, run_cli, tmp_path):
    # A reviewer: the review routes are fuzzed too, not only answered 403.
    token = run_cli(image_demo.dir, "token", "add", "fuzzer", "--role", "reviewer").stdout.strip()
    server = serve(image_demo.dir, "--no-scheduler")
    _check(fuzz(server.url, tmp_path, headers={"Authorization": f"Bearer {token}"}),
           ITEM_ROUTES)


if __name__ == "__main__":  # figures for the report: python tests/test_fuzz.py
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import ServerManager, _run_cli

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        projects = {"no tokens": demo.create_demo(root / "demo", "tabular", n=5),
                    "token": demo.create_demo(root / "digits", "image", n=5)}
        manager = ServerManager(root)
        try:
            for label, project in projects.items():
                headers = {"X-Labelloop-User": "fuzzer"}
                if label == "token":
                    token = _run_cli(project.dir, "token", "add", "fuzzer").stdout.strip()
                    headers = {"Authorization": f"Bearer {token}"}
                server = manager.start(project.dir, "--no-scheduler")
                out = root / label.replace(" ", "-")
                out.mkdir()
                result = fuzz(server.url, out, headers)
                print(f"{label}: exit {result['returncode']}, {result['requests']} requests, "
                      f"statuses {result['statuses']}, item routes 2xx {result['item_2xx']}")
                print(result["output"])
                server.stop()
        finally:
            manager.stop_all()
