"""Progress of long CLI work: a bar with rate on a terminal, periodic log lines (rate, ETA)
otherwise; the data imported and exported is the same as without progress."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import warm_launch

from labelloop.project import Project

pytestmark = pytest.mark.usefixtures("clean_env")

ROWS = 210_000  # three write steps of 100,000 rows


def labelloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelloop.cli", *args]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "big.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": np.arange(ROWS), "x": rng.random(ROWS).round(6),
                  "word": [f"w{i % 977}" for i in range(ROWS)]}).to_csv(path, index=False)
    return path


@pytest.fixture
def project_dir(tmp_path) -> Path:
    Project.init(tmp_path / "proj", key="P")
    return tmp_path / "proj"


def run(project_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    res = warm_launch.run(["--project", str(project_dir), *args], timeout=300,
                          env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return res


def test_import_and_export_log_progress_lines_off_a_terminal(project_dir, big_csv, tmp_path):
    res = run(project_dir, "dataset", "import", "big", str(big_csv),
              LABELLOOP_PROGRESS_INTERVAL="0")
    assert res.stdout == f"imported {ROWS} rows into big\n"
    lines = [line for line in res.stderr.splitlines() if "labelloop.progress" in line]
    assert any("writing big: 100,000 rows of 210,000 rows (48%)" in line and "rows/s" in line
               and "ETA" in line for line in lines), res.stderr
    assert any("reading big.csv:" in line and "B/s" in line for line in lines), res.stderr
    assert "writing big: 210,000 rows done in" in lines[-1]
    # The stepped write stores what one write would.
    got = Project.open(project_dir).dataset("big").read()
    pd.testing.assert_frame_equal(got, pd.read_csv(big_csv), check_dtype=False)

    out = tmp_path / "out.csv"
    res = run(project_dir, "dataset", "export", "big", str(out), LABELLOOP_PROGRESS_INTERVAL="0")
    assert res.stdout == f"exported {ROWS} rows of big to {out}\n"
    assert "exporting big: 50,000 rows of 210,000 rows" in res.stderr
    whole = tmp_path / "whole.csv"
    Project.open(project_dir).dataset("big").export_file(whole)  # the path without progress
    assert out.read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob(".*.part"))


def test_short_work_prints_no_progress(project_dir, tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("a,b\n1,x\n2,y\n")
    res = run(project_dir, "dataset", "import", "small", str(small))
    assert "labelloop.progress" not in res.stderr
    res = run(project_dir, "dataset", "export", "small", str(tmp_path / "back.csv"))
    assert (tmp_path / "back.csv").read_text() == "a,b\n1,x\n2,y\n"
    assert "labelloop.progress" not in res.stderr


def test_folder_import_progress(project_dir, tmp_path):
    source = tmp_path / "images"
    (source / "sub").mkdir(parents=True)
    for i in range(4):
        (source / f"{i}.txt").write_text(str(i))
    (source / "sub" / "x.txt").write_text("x")
    res = run(project_dir, "folder", "import", "imgs", str(source),
              LABELLOOP_PROGRESS_INTERVAL="0")
    assert res.stdout == "imported 5 files into folder imgs\n"
    assert "copying into imgs: 5 files of 5 files (100%)" in res.stderr
    assert (project_dir / "imgs" / "sub" / "x.txt").read_text() == "x"


def test_a_terminal_gets_a_bar_with_the_rate(project_dir, big_csv):
    main, child = pty.openpty()
    proc = subprocess.Popen(labelloop("--project", str(project_dir), "dataset", "import", "big",
                                      str(big_csv)),
                            stdout=subprocess.PIPE, stderr=child, stdin=subprocess.DEVNULL)
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(main)
    assert proc.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert proc.stdout.read().decode() == f"imported {ROWS} rows into big\n"
    assert "writing big" in text and "[####" in text and "100%" in text and "rows/s" in text
    assert "reading big.csv" in text and ("MiB/s" in text or "KiB/s" in text)
    assert "labelloop.progress" not in text  # a bar, not log lines


def test_recipe_progress_lines_have_rate_and_eta(caplog, monkeypatch):
    import logging

    from labelloop.progress import tracker

    progress = tracker(logging.getLogger("test.recipe"), bar=False)
    with caplog.at_level(logging.INFO, logger="test.recipe"):
        assert list(progress(range(10), "scoring")) == list(range(10))
    last = caplog.records[-2].getMessage()
    assert last.startswith("scoring: 10 items of 10 items (100%), ") and "items/s" in last \
        and "ETA 0s" in last
    assert caplog.records[-1].getMessage().startswith("scoring: 10 items done in ")
    # Unknown length (chunks of a stream): a line every LABELLOOP_PROGRESS_INTERVAL seconds.
    monkeypatch.setenv("LABELLOOP_PROGRESS_INTERVAL", "0")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.recipe"):
        assert list(progress(iter(range(3)), "chunks")) == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(", ")[0] for m in messages[:3]] == [
        "chunks: 1 items", "chunks: 2 items", "chunks: 3 items"]
    assert len(messages) == 4 and messages[3].startswith("chunks: 3 items done in ")
