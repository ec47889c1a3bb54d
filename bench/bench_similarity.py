"""Similarity labeling benchmark: does tuning on answers help, how fast is it, how soon can
one start on a big pool?

1. Digits as images (sklearn's load_digits as PNG files, as `labelloop demo --data similarity`):
   1,397 in the webapp's pool, 400 held out as evaluation queries. A simulated annotator
   answers the webapp's questions (its active choice of queries, top-8 candidates from a match
   pool of 100) for two notions of "related": the same digit, and the same parity (odd/even).
   After 20 and 50 answered questions the model is saved; the *saved* skops model embeds the
   held-out queries and the pool, and precision@10 is measured against the base embedding
   (version 0). Parity is also measured over the other digits only (the query's own digit
   left out of the search), where the base embedding, which groups digits by shape, is close
   to chance.
2. The time from a submission to the new tuned version (p50 / p95), as the annotator waits
   for it before asking the next question.
3. The time to the first question on a 100,000-row pool (16 numeric columns), next to the
   time to index the whole pool (what a page that waits for the pool would cost).

Prints tables; asserts nothing.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-lib"))

from labeling.similarity.recipes import load_embedding  # noqa: E402
from labeling.similarity.service import SimilarityService  # noqa: E402
from labeling.similarity.settings import parse_settings  # noqa: E402
from labelloop.project import Project  # noqa: E402

HELD_OUT = 400
CHECKPOINTS = (20, 50)
K = 10
BIG_POOL = 100_000
NOTIONS = {"same digit": lambda a, b: a == b, "same parity": lambda a, b: a % 2 == b % 2}


def digits_project(root: Path) -> tuple[Project, dict[str, int], list[str]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    held = set(order[:HELD_OUT].tolist())
    project = Project.init(root / "digits", key="BENCH")
    for name in ("pool", "heldout"):
        project.declare("folders", name)
    truth, held_ids = {}, []
    for i, image in enumerate(digits.images):
        pixels = (255 - np.round(image * (255 / 16))).astype(np.uint8)
        img = Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rel = f"digit-{i:04d}.png"
        project.folder("heldout" if i in held else "pool").write_bytes(rel, buf.getvalue())
        truth[rel] = int(digits.target[i])
        if i in held:
            held_ids.append(rel)
    return project, truth, held_ids


def precision_at_k(project: Project, model_name: str, version: int | None, truth: dict,
                   held_ids: list[str], base: SimilarityService | None = None) -> dict:
    """precision@K of held-out queries against the pool, with a saved version (or the base)."""
    from sklearn.neighbors import NearestNeighbors

    pool, held = project.folder("pool"), project.folder("heldout")
    pool_ids = sorted(pool.list())
    if base is not None:  # version 0: the base embedding the webapp started from
        from labeling.similarity.embedding import embed

        P = embed(base.index.base, pd.DataFrame({"path": pool_ids}))
        held_model = base.index.base
        from labeling.training import set_folder_root

        set_folder_root(held_model, str(held.root))
        Q = embed(held_model, pd.DataFrame({"path": held_ids}))
        set_folder_root(held_model, str(pool.root))
    else:
        model = project.model(model_name)
        pipe, _ = load_embedding(model, pool)
        P = pipe.transform(pd.DataFrame({"path": pool_ids}))
        pipe, _ = load_embedding(model, held)
        Q = pipe.transform(pd.DataFrame({"path": held_ids}))
    y_pool = np.array([truth[i] for i in pool_ids])
    y_held = np.array([truth[i] for i in held_ids])
    out = {}
    nn = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(P)
    _, idx = nn.kneighbors(Q)
    for name, rel in NOTIONS.items():
        out[name] = float(rel(y_held[:, None], y_pool[idx]).mean())
    # Parity over the other digits: the query's own digit left out of the search.
    far = NearestNeighbors(n_neighbors=min(len(pool_ids), 400), algorithm="brute").fit(P)
    _, idx = far.kneighbors(Q)
    hits = []
    for r in range(len(held_ids)):
        others = [j for j in idx[r] if y_pool[j] != y_held[r]][:K]
        hits.append(np.mean(y_pool[others] % 2 == y_held[r] % 2))
    out["same parity, other digits"] = float(np.mean(hits))
    return out


def simulate(project: Project, truth: dict, held_ids: list[str], notion: str) -> dict:
    rel = NOTIONS[notion]
    app = notion.replace(" ", "-")
    cfg = parse_settings({"unlabeled": "pool", "pairs_ds": f"pairs-{app}",
                          "model_name": f"emb-{app}", "top_k": 8, "match_pool": 100},
                         app, project)
    service = SimilarityService(project, cfg, background=True)
    service.index.wait(timeout=300, items=10**9)
    results = {0: precision_at_k(project, cfg.model_name, None, truth, held_ids, base=service)}
    waits = []
    for n in range(1, max(CHECKPOINTS) + 1):
        q = service.questions("sim", 1)["questions"][0]
        y_q = truth[q["query"]["id"]]
        cands = [c["id"] for c in q["candidates"]]
        pos = [c for c in cands if rel(y_q, truth[c])]
        before = service.stats()["model_version"]
        t0 = time.perf_counter()
        service.answer("sim", {"question_id": q["question_id"], "positives": pos,
                               "negatives": [c for c in cands if c not in pos]})
        while service.stats()["model_version"] == before:
            time.sleep(0.005)
        waits.append(time.perf_counter() - t0)
        if n in CHECKPOINTS:
            version = service.save_model("sim")["version"]
            results[n] = precision_at_k(project, cfg.model_name, version, truth, held_ids)
    return {"precision": results, "waits": waits}


def first_question(root: Path) -> dict:
    rng = np.random.default_rng(0)
    project = Project.init(root / "big", key="BIG")
    frame = pd.DataFrame({f"x{j}": rng.normal(size=BIG_POOL) for j in range(16)})
    frame.insert(0, "item", [f"row-{i:06d}" for i in range(BIG_POOL)])
    project.dataset("pool", create=True).write(frame)
    cfg = parse_settings({"unlabeled": "pool", "id_column": "item"}, "big", project)
    t0 = time.perf_counter()
    service = SimilarityService(project, cfg, background=True)
    while not service.questions("sim", 1)["questions"]:
        time.sleep(0.01)
    first = time.perf_counter() - t0
    indexed_then = service.index.count()
    service.index.wait(timeout=600, items=BIG_POOL)
    full = time.perf_counter() - t0
    return {"first": first, "indexed_then": indexed_then, "full": full}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project, truth, held_ids = digits_project(root)
        runs = {notion: simulate(project, truth, held_ids, notion) for notion in NOTIONS}
        big = first_question(root)
    print("\nprecision@10 of 400 held-out digit queries against a 1,397-image pool")
    print(f"{'annotator says related =':26} {'measured as':28} {'base':>6} {'@20':>6} {'@50':>6} "
          f"{'gain@50':>8}")
    for notion, run in runs.items():
        p = run["precision"]
        metrics = [notion] + (["same parity, other digits"] if notion == "same parity" else [])
        for metric in metrics:
            gain = p[50][metric] - p[0][metric]
            print(f"{notion:26} {metric:28} {p[0][metric]:6.3f} {p[20][metric]:6.3f} "
                  f"{p[50][metric]:6.3f} {gain:+8.3f}")
    print("\ntime from a submission to the new tuned version (s)")
    for notion, run in runs.items():
        w = sorted(run["waits"])
        p95 = w[min(len(w) - 1, int(round(0.95 * (len(w) - 1))))]
        print(f"  {notion:14} p50 {statistics.median(w):.3f}   p95 {p95:.3f}   max {w[-1]:.3f}"
              f"   (n={len(w)})")
    print(f"\n{BIG_POOL:,}-row pool: first question after {big['first']:.2f} s "
          f"({big['indexed_then']:,} rows indexed then); whole pool indexed after "
          f"{big['full']:.2f} s (a page waiting for the pool would start then)")


if __name__ == "__main__":
    main()
