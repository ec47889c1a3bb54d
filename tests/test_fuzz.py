"""Fuzzing the JSON API with schemathesis against a live server on a demo project.

`schemathesis run --checks all` generates valid and invalid requests for every operation of
`/api/v1/openapi.json` (a fixed seed and a bounded number of examples keep it deterministic and
short) and checks every answer: no 5xx, answers matching the documented schemas, valid requests
accepted, invalid ones rejected. Run once without tokens (the tabular demo) and once with a
token (the image demo: folder items).

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

import pytest

from labeling import demo

pytestmark = pytest.mark.slow

SEED = 20251125
MAX_EXAMPLES = 60
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or \
    shutil.which("schemathesis")


def fuzz(url: str, report_dir: Path, headers: dict | None = None,
         max_examples: int = MAX_EXAMPLES, seed: int = SEED) -> dict:
    """Run schemathesis against a server; `{"returncode", "output", "statuses", "requests"}`."""
    har = report_dir / "run.har"
    cmd = [SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json", "--checks", "all",
           "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
           "--phases", "examples,coverage,fuzzing", "--no-shrink", "--request-timeout", "30",
           "--suppress-health-check", "all", "--report", "har", "--report-har-path", str(har),
           "--output-truncate", "true", "--continue-on-failure"]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false",
           "HYPOTHESIS_STORAGE_DIRECTORY": str(report_dir / "hypothesis")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                          cwd=report_dir)
    statuses: collections.Counter = collections.Counter()
    if har.exists():
        for entry in json.loads(har.read_text())["log"]["entries"]:
            statuses[entry["response"]["status"]] += 1
    return {"returncode": proc.returncode, "output": proc.stdout + proc.stderr,
            "statuses": dict(sorted(statuses.items())), "requests": sum(statuses.values())}


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    return demo.create_demo(tmp_path_factory.mktemp("fuzz") / "demo", "tabular", n=5)


@pytest.fixture(scope="module")
def image_demo(tmp_path_factory):
    return demo.create_demo(tmp_path_factory.mktemp("fuzz") / "digits", "image", n=5)


def _check(result: dict) -> None:
    print(f"\nschemathesis: {result['requests']} requests, statuses {result['statuses']}")
    five = {s: n for s, n in result["statuses"].items() if s >= 500}
    assert not five, f"server errors {five}\n{result['output'][-6000:]}"
    assert result["returncode"] == 0, result["output"][-8000:]
    assert result["requests"] > 100


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
def test_fuzzing_without_tokens_finds_nothing(demo_project, serve, tmp_path):
    server = serve(demo_project.dir, "--no-scheduler")
    _check(fuzz(server.url, tmp_path, headers={"X-Labelloop-User": "fuzzer"}))


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
def test_fuzzing_with_a_token_finds_nothing(image_demo, serve, run_cli, tmp_path):
    token = run_cli(image_demo.dir, "token", "add", "fuzzer").stdout.strip()
    server = serve(image_demo.dir, "--no-scheduler")
    _check(fuzz(server.url, tmp_path, headers={"Authorization": f"Bearer {token}"}))


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
                      f"statuses {result['statuses']}")
                print(result["output"])
                server.stop()
        finally:
            manager.stop_all()
