"""Progress of large imports and exports in every format, not only CSV: Parquet is read batch by
batch and exported chunk by chunk with a progress line, and a format with its own reader (JSON
Lines here, a plugin's the same way) shows the stepped write; the data is what an import or
export without progress gives."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import warm_launch

from labelloop.project import Project

pytestmark = pytest.mark.usefixtures("clean_env")

ROWS = 210_000  # three write steps of 100,000 rows


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"id": np.arange(ROWS), "x": rng.random(ROWS).round(6),
                         "word": [f"w{i % 977}" for i in range(ROWS)]})


def run(project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    res = warm_launch.run(["--project", str(project_dir), *args], timeout=300,
                          env={**os.environ, "LABELLOOP_PROGRESS_INTERVAL": "0"})
    assert res.returncode == 0, res.stderr
    return res


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "labelloop.progress" in line]


def test_parquet_import_and_export_show_progress(tmp_path, frame):
    Project.init(tmp_path / "proj", key="P")
    source = tmp_path / "big.parquet"
    frame.to_parquet(source, index=False)
    res = run(tmp_path / "proj", "dataset", "import", "big", str(source))
    assert res.stdout == f"imported {ROWS} rows into big\n"
    lines = progress_lines(res.stderr)
    assert any("reading big.parquet: 50,000 rows of 210,000 rows" in line and "rows/s" in line
               for line in lines), res.stderr
    assert any("writing big: 100,000 rows of 210,000 rows (48%)" in line for line in lines)
    project = Project.open(tmp_path / "proj")
    pd.testing.assert_frame_equal(project.dataset("big").read(), frame, check_dtype=False)

    out = tmp_path / "out.parquet"
    res = run(tmp_path / "proj", "dataset", "export", "big", str(out))
    assert res.stdout == f"exported {ROWS} rows of big to {out}\n"
    assert "exporting big: 50,000 rows of 210,000 rows" in res.stderr
    whole = tmp_path / "whole.parquet"
    project.dataset("big").export_file(whole)  # the path without progress
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(whole))
    assert not list(tmp_path.glob(".*.part"))


def test_a_broken_parquet_file_is_one_clear_error_and_writes_nothing(tmp_path):
    Project.init(tmp_path / "proj", key="P")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    res = warm_launch.run(["--project", str(tmp_path / "proj"), "dataset", "import", "bad",
                           str(bad)], timeout=120)
    assert res.returncode != 0
    assert f"cannot read {bad} as parquet" in res.stderr
    assert "Traceback" not in res.stderr
    assert "bad" not in Project.open(tmp_path / "proj").dataset_names()


def test_a_format_with_its_own_reader_shows_the_stepped_write(tmp_path, frame):
    Project.init(tmp_path / "proj", key="P")
    source = tmp_path / "big.jsonl"
    frame.to_json(source, orient="records", lines=True)
    res = run(tmp_path / "proj", "dataset", "import", "big", str(source))
    assert res.stdout == f"imported {ROWS} rows into big\n"
    assert any("writing big: 100,000 rows of 210,000 rows (48%)" in line
               for line in progress_lines(res.stderr)), res.stderr
    got = Project.open(tmp_path / "proj").dataset("big").read()
    pd.testing.assert_frame_equal(got, frame, check_dtype=False)
