"""Features of candidate regions: what the detector's classifier sees of each box.

Per box, from the grey image and its contrast map (``proposals.contrast_map``):

- the shape: the box's contrast resized to 8 x 8 (its coarse silhouette), and HOG
  (``skimage.feature.hog``, 8 px cells, 2 x 2 blocks) of a crop padded by a third of the box
  on each side resized to 32 x 32 (the shape with its context: does the box cut an object,
  or hold two?);
- intensity: a histogram of the crop's contrast (in units of the image's strongest
  contrast), the share of the box's pixels that stand out, how much stands out in the ring
  just outside the box (high when the box cuts an object), the colour of what stands out
  against the image's mean colour;
- the geometry: log width, log height, log aspect, and the box's side over the image's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .proposals import contrast_map, to_gray

SHAPE_SIDE = 8
CONTEXT_SIDE = 32
PAD = 1 / 3
HIST_EDGES = np.array([0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, np.inf])


@dataclass
class ImageView:
    """One image prepared for proposals and features."""

    rgb: np.ndarray  # H x W x 3 float
    gray: np.ndarray  # H x W float 0..255
    contrast: np.ndarray  # H x W: how far each pixel stands out from its background
    peak: float  # a robust maximum of the contrast
    mean_rgb: np.ndarray

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])


def view(pixels: np.ndarray) -> ImageView:
    """An image array (H, W[, C]) as an ``ImageView``."""
    rgb = np.asarray(pixels, dtype=np.float64)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3]
    gray = to_gray(rgb)
    contrast = contrast_map(gray)
    med = float(np.median(contrast))
    peak = max(float(np.percentile(contrast, 99.5)) - med, 1.0)
    return ImageView(rgb, gray, contrast, peak, rgb.reshape(-1, 3).mean(axis=0))


def _crop(a: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """``a[y0:y1, x0:x1]`` with the part outside the image filled by edge values."""
    h, w = a.shape[:2]
    xi0, yi0 = int(np.floor(x0)), int(np.floor(y0))
    xi1, yi1 = max(int(np.ceil(x1)), xi0 + 1), max(int(np.ceil(y1)), yi0 + 1)
    ys = np.clip(np.arange(yi0, yi1), 0, h - 1)
    xs = np.clip(np.arange(xi0, xi1), 0, w - 1)
    return a[np.ix_(ys, xs)]


def _resize(a: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(img.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)


def _hog(a: np.ndarray, cell: int) -> np.ndarray:
    from skimage.feature import hog

    return hog(a, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
               block_norm="L2-Hys", feature_vector=True)


def box_features(v: ImageView, box: np.ndarray) -> np.ndarray:
    """The feature vector of one box (x, y, w, h) of an image."""
    x, y, w, h = (float(t) for t in box)
    x1, y1 = x + w, y + h
    inner = _crop(v.contrast, x, y, x1, y1) / v.peak
    px, py = PAD * w + 2, PAD * h + 2
    context = _crop(v.contrast, x - px, y - py, x1 + px, y1 + py) / v.peak
    shape = _resize(inner, SHAPE_SIDE).ravel()
    ctx = _hog(_resize(context, CONTEXT_SIDE), 8)
    hist = np.histogram(np.clip(inner, 0, None), HIST_EDGES)[0] / inner.size
    strong = inner > 0.3
    ring_total = (context > 0.3).sum() - strong.sum()
    ring_area = max(context.size - inner.size, 1)
    rgb = _crop(v.rgb, x, y, x1, y1)
    ink = rgb[strong] if strong.any() else rgb.reshape(-1, 3)
    colour = (ink.mean(axis=0) - v.mean_rgb) / 255
    geometry = [np.log(w), np.log(h), np.log(w / h), w / v.width, h / v.height]
    return np.concatenate([shape, ctx, hist, [strong.mean(), ring_total / ring_area,
                                              inner.mean(), inner.max()], colour, geometry])


def features(v: ImageView, boxes: np.ndarray) -> np.ndarray:
    """The feature matrix of an image's boxes (N, 4) -> (N, F)."""
    if not len(boxes):
        return np.empty((0, n_features()))
    return np.stack([box_features(v, b) for b in boxes])


def n_features() -> int:
    """The length of a box's feature vector."""
    blank = ImageView(np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8)), 1.0,
                      np.zeros(3))
    return int(box_features(blank, np.array([0, 0, 4, 4])).shape[0])
