"""Box detection: the built-in detector's learning curves under the box query strategies,
its training time, the Query Sampler's time per 1,000 images, and `batch` with box
suggestions. Prints figures, and PASS/FAIL for the target (mAP@0.5 >= 0.5 on held-out scenes
after 100 boxed images); asserts nothing else.

1. Learning curves. A simulated annotator boxes the boxes demo's 300 scenes (their truth, as
   `labelloop demo --data boxes` generates them: seed 0) in batches of 20, from 20 to 200
   images. The first batch is random (seeded); after each batch the detector is retrained on
   the images boxed so far and scored on 100 held-out scenes (another seed) with pycocotools'
   COCOeval at IoU 0.5 (mAP@0.5); the next 20 are the unlabeled scenes the strategy ranks
   first (`labeling.boxes.sampling.score_analyses`, as the Query Sampler does), or 20 at
   random. AULC: the area under mAP over images 20..200 divided by that range (the curve's
   mean). To keep this section to a minute or two, every scene's proposals and features are
   computed once, with the sliding windows' sizes of the first batch of seed 0 (the Train
   detector recipe takes them from all the boxes it trains on); the classifier is retrained
   at every step, as the recipe does.
2. The real pipeline on the demo project: 100 scenes boxed through the in-process labeling
   engine (by the truth), the Train detector recipe (with its 5-fold cross-validation, and
   the fit alone), the saved detector's mAP@0.5 on the 100 held-out scenes (PASS/FAIL), the
   Query Sampler recipe on the 200 other scenes (its time per 1,000 images).
3. `batch` with box suggestions: the in-process engine of the demo's image-boxes webapp
   serves the ranked scenes to 8 annotators in turn, each fetching a batch of 20 (timed) and
   accepting the suggested boxes (`label` with them, as Enter does on the page). p50 / p99 /
   max of `batch`.

    python bench/bench_detection.py                  # box_max, box_mean, random; 1 seed
                                                     # (~3-5 min on a shared machine)
    python bench/bench_detection.py --full           # every strategy, 3 seeds
    python bench/bench_detection.py --skip-curves    # sections 2 and 3 alone
"""

from __future__ import annotations

import os

# One BLAS thread per process: small fits on a shared machine are far slower with a pool.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

BATCH, FIRST, LAST = 20, 20, 200
HELD_OUT, HELD_OUT_SEED = 100, 4242
TARGET_IMAGES, TARGET_MAP = 100, 0.5
STRATEGIES = ("box_max", "box_mean", "margin", "near_threshold", "random")
DEFAULT_STRATEGIES = ("box_max", "box_mean", "random")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def scenes_and_held_out(directory: Path):
    from labeling.boxes.demo import N_SCENES, SEED
    from labeling.boxes.scenes import make_scenes

    pool = make_scenes(directory / "pool", N_SCENES, SEED)
    held = make_scenes(directory / "held", HELD_OUT, HELD_OUT_SEED)
    return pool, held


def held_out_map(detector, regions, held) -> float:
    from labeling.boxes.evaluate import mean_average_precision

    found = [detector.detections(detector.analyse_regions(r)) for r in regions]
    return mean_average_precision(held, found, detector.classes)["map50"]


# --------------------------------------------------------------------------- learning curves


def learning_curves(directory: Path, pool, held, strategies, seeds) -> dict:
    from labeling.boxes.detector import BoxDetector, read_image
    from labeling.boxes.sampling import score_analyses
    from labeling.boxes.scenes import OBJECT_CLASSES

    classes = sorted(OBJECT_CLASSES)
    base = BoxDetector()
    first = np.random.default_rng(0).choice(len(pool), FIRST, replace=False)
    base.set_classes(classes, [pool[i]["boxes"] for i in first])
    t0 = time.perf_counter()
    pool_regions = [base.regions(read_image(directory / "pool" / s["path"]), s["boxes"])
                    for s in pool]
    held_regions = [base.regions(read_image(directory / "held" / s["path"])) for s in held]
    per_image = (time.perf_counter() - t0) / (len(pool) + len(held))
    print(f"proposals + features of {len(pool)} pool and {len(held)} held-out scenes: "
          f"{per_image * 1000:.0f} ms per image (computed once for the curves)")
    steps = list(range(FIRST, LAST + 1, BATCH))
    curves: dict[str, list[list[float]]] = {s: [] for s in strategies}
    for seed in seeds:
        start = np.random.default_rng(seed).choice(len(pool), FIRST, replace=False)
        for strategy in strategies:
            labeled = list(start)
            maps = []
            rng = np.random.default_rng([seed, 1])
            for n in steps:
                det = BoxDetector(random_state=seed)
                det.classes, det.window_sizes = base.classes, base.window_sizes
                det.fit_regions([pool_regions[i] for i in labeled])
                maps.append(held_out_map(det, held_regions, held))
                if n == LAST:
                    break
                rest = np.setdiff1d(np.arange(len(pool)), labeled)
                analyses = [det.analyse_regions(pool_regions[i]) for i in rest]
                scores = score_analyses(det, analyses, strategy, rng=rng)["uncertainty"]
                order = np.argsort(-scores, kind="stable")
                labeled += [int(rest[i]) for i in order[:BATCH]]
            curves[strategy].append(maps)
            print(f"  seed {seed} {strategy:>14}: " + " ".join(f"{m:.3f}" for m in maps),
                  flush=True)
    print()
    print(f"mAP@0.5 on {HELD_OUT} held-out scenes by images boxed (mean over "
          f"{len(list(seeds))} seed(s)):")
    header = "images".rjust(16) + "".join(f"{n:>7}" for n in steps) + "    AULC"
    print(header)
    result = {}
    for strategy, runs in curves.items():
        mean = np.mean(np.asarray(runs), axis=0)
        aulc = float(np.trapezoid(mean, steps) / (steps[-1] - steps[0]))
        result[strategy] = {"curve": mean.tolist(), "aulc": aulc}
        print(f"{strategy:>16}" + "".join(f"{m:7.3f}" for m in mean) + f"  {aulc:.3f}")
    at = steps.index(TARGET_IMAGES)
    best = {s: r["curve"][at] for s, r in result.items()}
    print(f"after {TARGET_IMAGES} images: " + ", ".join(f"{s} {m:.3f}" for s, m in best.items()))
    print()
    return result


# --------------------------------------------------------------------------- the pipeline


def pipeline_and_batch(directory: Path, held, batches: int) -> bool:
    from labeling import demo
    from labeling.boxes.demo import TRUTH_FILE
    from labeling.boxes.detector import read_image
    from labeling.boxes.evaluate import mean_average_precision
    from labeling.boxes.training import train_detector
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings
    from labeling.training import TRUSTED_TYPES
    from labelloop import flow

    project = demo.create_demo(directory / "project", "boxes", n=BATCH)
    coco = json.loads((project.dir / TRUTH_FILE).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    truth: dict[str, list[dict]] = {f: [] for f in files.values()}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        truth[files[a["image_id"]]].append({"x": x, "y": y, "w": w, "h": h,
                                            "label": names[a["category_id"]]})
    (webapp, app), = project.config["webapps"].items()
    cfg = parse_settings(app["params"], "image", webapp, project, kind="boxes")
    engine = LabelingEngine(project, cfg, check_interval=0.0, background=False)
    done = 0
    while done < TARGET_IMAGES:
        for item in engine.batch("teacher", BATCH)["items"]:
            engine.label("teacher", item["id"], truth[item["id"]])
            done += 1
    labels = project.dataset("labels").read()
    root = project.folder("images").root
    t = time.perf_counter()
    flow.run_recipe(project, "train", show_progress=False)
    train_cv = time.perf_counter() - t
    t = time.perf_counter()
    train_detector(labels, "label", folder_root=root, cv=False)
    train_fit = time.perf_counter() - t
    meta = project.model("detector").versions()[-1]
    detector = project.model("detector").load(meta["version"], trusted=TRUSTED_TYPES)
    found = [detector.detect(read_image(directory / "held" / s["path"])) for s in held]
    held_map = mean_average_precision(held, found, detector.classes)["map50"]
    t = time.perf_counter()
    flow.run_recipe(project, "sample", show_progress=False)
    sample = time.perf_counter() - t
    queries = project.dataset("queries").read()
    print(f"the demo project, {TARGET_IMAGES} scenes boxed through the engine:")
    print(f"  Train detector: {train_cv:.1f} s with 5-fold cross-validation (cv mAP@0.5 "
          f"{meta['metrics']['map50']:.3f}), {train_fit:.1f} s the fit alone")
    print(f"  Query Sampler: {len(queries)} images in {sample:.1f} s = "
          f"{sample / len(queries) * 1000:.1f} s per 1,000 images")
    passed = held_map is not None and held_map >= TARGET_MAP
    print(f"  held-out mAP@0.5 of the saved detector after {TARGET_IMAGES} images: "
          f"{held_map:.3f} (target >= {TARGET_MAP}): {'PASS' if passed else 'FAIL'}")

    engine = LabelingEngine(project, cfg, check_interval=0.0, background=False)
    times, served, suggested = [], 0, 0
    for b in range(batches):
        user = f"annotator{b % 8}"
        t = time.perf_counter()
        items = engine.batch(user, BATCH)["items"]
        times.append(time.perf_counter() - t)
        if not items:
            break
        for item in items:
            suggestion = item.get("suggestion") or {}
            if suggestion.get("model_version") != meta["version"]:
                raise SystemExit(f"item {item['id']} came without the detector's boxes")
            boxes = [{k: b[k] for k in ("x", "y", "w", "h", "label")}
                     for b in suggestion["boxes"] if b["score"] >= 0.5]
            suggested += len(suggestion["boxes"])
            engine.label(user, item["id"], boxes)
            served += 1
    print(f"  batch with box suggestions (in-process engine): {len(times)} batches of "
          f"{BATCH} by 8 annotators, {served} scenes, {suggested} suggested boxes")
    print(f"  batch p50 {pct(times, 50):.1f} ms   p99 {pct(times, 99):.1f} ms   "
          f"max {max(times) * 1000:.1f} ms")
    project.engine.dispose()
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="every strategy, 3 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--strategies", default=None, help=f"comma-separated of {STRATEGIES}")
    parser.add_argument("--skip-curves", action="store_true")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    strategies = args.strategies.split(",") if args.strategies else \
        list(STRATEGIES if args.full else DEFAULT_STRATEGIES)
    seeds = range(args.seeds or (3 if args.full else 1))
    directory = Path(tempfile.mkdtemp(prefix="bench-detection-"))
    try:
        t0 = time.perf_counter()
        pool, held = scenes_and_held_out(directory)
        if not args.skip_curves:
            learning_curves(directory, pool, held, strategies, seeds)
        passed = pipeline_and_batch(directory, held, args.batches)
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; target mAP@0.5 >= {TARGET_MAP} "
              f"after {TARGET_IMAGES} images: {'PASS' if passed else 'FAIL'}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
