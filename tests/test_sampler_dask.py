"""The Query Sampler on Dask: a real LocalCluster (2 worker processes, 127.0.0.1 only) gives
the same queries as the local engine, for a dataset pool (chunk files) and a folder of images."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_recipes import flow_config, set_params, tabular_labels

from labeling.distributed import dask_client
from labelloop.errors import LabelloopError
from labelloop.flow import run_recipe

pytest.importorskip("distributed")


def big_pool(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n).round(3), "y": rng.normal(size=n).round(3),
                         "color": rng.choice(["red", "green", "blue"], size=n),
                         "note": [f"row {i}" for i in range(n)]})


@pytest.fixture(scope="module", autouse=True)
def _environment_kept():
    """A LocalCluster sets variables of this process for good (PYTHONHASHSEED, the BLAS
    threads, __DASK_PARENT_PID): put the environment back, or every later `labelloop`
    command of this worker would differ from the warm parent's and start a fresh interpreter."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def cluster_address():
    """One LocalCluster for the module: 2 single-threaded worker processes on 127.0.0.1."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert all(w.startswith("tcp://127.0.0.1:") for w in cluster.workers_info()) \
            if hasattr(cluster, "workers_info") else True
        yield cluster.scheduler_address


def both_engines(project, address: str, **params) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    set_params(project, "sample", engine="local", **params)
    run_recipe(project, "sample")
    local = project.dataset("queries").read()
    set_params(project, "sample", engine="dask", dask_scheduler=address)
    record = run_recipe(project, "sample")
    assert record["status"] == "SUCCESS", record
    return local, project.dataset("queries").read(), record


@pytest.mark.slow
def test_dask_gives_the_local_queries_on_a_chunk_file_pool(make_project, cluster_address):
    project = make_project(config=flow_config(sample_params={"chunk_size": 4000}))
    pool = big_pool(23_000)
    project.dataset("pool").write(pool)
    assert len(project.dataset("pool").chunk_files()) >= 1  # column-wise: chunk files
    labels = tabular_labels(pool, list(range(0, 23_000, 400)))
    project.dataset("labels").write(labels)
    run_recipe(project, "train")

    for params in ({"max_queries": 0}, {"max_queries": 300}, {"strategy": "diverse_margin",
                                                              "max_queries": 0},
                   {"strategy": "diverse_margin", "max_queries": 50, "batch_size": 20},
                   {"strategy": "random", "max_queries": 100}):
        local, dask, record = both_engines(project, cluster_address, **params)
        pd.testing.assert_frame_equal(local, dask)
        expected = 23_000 - len(labels) if not params["max_queries"] else params["max_queries"]
        assert len(dask) == expected, params
        assert record["details"]["engine"] == "dask"
        assert record["details"]["excluded"] == len(labels)
        assert set(dask["model_version"]) == {"1"}
        assert not set(labels["note"]) & set(dask["note"])


@pytest.mark.slow
def test_dask_gives_the_local_queries_on_a_folder_of_images(make_project, cluster_address):
    project = make_project(config=flow_config(folder="images", sample_params={
        "chunk_size": 100}, train_params={"data_type": "image"}))
    root = project.folder("images").root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths, truth = [], []
    for i in range(60):
        dark = i % 2 == 0
        pixels = rng.integers(0, 90, (8, 8)) if dark else rng.integers(160, 255, (8, 8))
        path = f"img-{i:03d}.png"
        Image.fromarray(pixels.astype(np.uint8), mode="L").save(root / path)
        paths.append(path)
        truth.append("dark" if dark else "light")
    labeled = list(range(0, 60, 5))
    project.dataset("labels").write(pd.DataFrame({
        "path": [paths[i] for i in labeled], "label": [truth[i] for i in labeled],
        "label_id": range(len(labeled))}))
    set_params(project, "sample", chunk_size=100)
    run_recipe(project, "train")
    local, dask, _ = both_engines(project, cluster_address, max_queries=0)
    pd.testing.assert_frame_equal(local, dask)
    assert len(dask) == 48 and not set(dask["path"]) & {paths[i] for i in labeled}


def test_dask_engine_without_dask_is_a_clear_error(make_project, monkeypatch):
    project = make_project(config=flow_config(sample_params={"engine": "dask"}))
    pool = big_pool(100)
    project.dataset("pool").write(pool)
    project.dataset("labels").write(tabular_labels(pool, range(30)))
    run_recipe(project, "train")
    before = project.dataset("queries").exists()
    for name in ("dask", "dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(LabelloopError, match=r"pip install 'labelloop\[dask\]'"):
        run_recipe(project, "sample")
    assert project.dataset("queries").exists() == before  # nothing written


def test_local_cluster_listens_on_loopback_only():
    import os
    import shutil
    import subprocess

    with dask_client(None, 1) as client:
        info = client.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
        if shutil.which("ss"):  # every socket the cluster listens on, HTTP included
            pids = {os.getpid(), *client.run(os.getpid).values()}
            lines = [line for line in subprocess.run(["ss", "-ltnp"], capture_output=True,
                                                     text=True).stdout.splitlines()
                     if any(f"pid={p}," in line for p in pids)]
            assert lines and all(line.split()[3].startswith("127.0.0.1:") for line in lines)
