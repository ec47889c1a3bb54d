"""Region proposals: candidate boxes where something stands out from a smooth background.

The grey image is lightly smoothed, its background is estimated by morphological closing and
opening with a window wider than an object's strokes, and the black and white top-hats (how
far a pixel is darker / brighter than that background) are thresholded at a few multiples of
their noise level (median absolute deviation). Connected components of the mask, joined by
dilations of a few sizes (so a digit broken into strokes still makes one region), are the
candidates (``skimage.measure.label`` / ``regionprops``). Duplicates (IoU > 0.9) are merged,
and boxes too small or too big for an object are dropped. As a fallback for an object the
components cut into pieces, a sliding window at the sizes of the objects seen in training
adds candidates around each component smaller than half the smallest typical object.
"""

from __future__ import annotations

import numpy as np

# (threshold, dilation radius in px), from loose and joined to strict and tight; a threshold
# >= 1 is in noise units above the median, < 1 a share of the strongest contrast (on a plain
# background the noise is tiny and only the latter separates two close objects).
LEVELS = ((3.0, 1), (3.0, 4), (5.0, 2), (5.0, 6), (8.0, 0), (8.0, 3), (15.0, 0), (15.0, 1),
          (0.3, 0), (0.3, 2), (0.5, 0), (0.7, 0))
MIN_SIDE = 6  # px: a smaller component is noise
MAX_SHARE = 0.6  # a candidate wider or higher than this share of the image is background
DEDUPE_IOU = 0.9


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """An image array (H, W[, C]) as float grey levels 0..255."""
    a = np.asarray(pixels, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2)
    return a


def contrast_map(gray: np.ndarray, window: int = 15) -> np.ndarray:
    """Per pixel: how far it stands out (darker or brighter) from its local background."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(gray, 1.0)
    dark = ndimage.grey_closing(smooth, size=(window, window)) - smooth
    bright = smooth - ndimage.grey_opening(smooth, size=(window, window))
    return np.maximum(dark, bright)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4: x, y, w, h) with every box of ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def dedupe(boxes: np.ndarray, threshold: float = DEDUPE_IOU) -> np.ndarray:
    """The boxes without near-duplicates (a box whose IoU with an earlier one exceeds
    ``threshold`` is dropped)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) < 2:
        return boxes
    iou = iou_matrix(boxes, boxes)
    keep = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if keep[i]:
            dup = iou[i] > threshold
            dup[: i + 1] = False
            keep &= ~dup
    return boxes[keep]


def component_boxes(contrast: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Boxes (x, y, w, h) of the connected components of the thresholded contrast map."""
    from scipy import ndimage
    from skimage.measure import label, regionprops

    med = float(np.median(contrast))
    noise = 1.4826 * float(np.median(np.abs(contrast - med))) + 1.0
    peak = float(np.percentile(contrast, 99.5))
    out = []
    for k, radius in levels:
        mask = contrast > (med + k * noise if k >= 1 else med + k * (peak - med))
        if radius:
            mask = ndimage.binary_dilation(mask, iterations=radius)
        for region in regionprops(label(mask)):
            y0, x0, y1, x1 = region.bbox
            # the dilation grew the component by `radius`: take it back off
            x0, y0 = x0 + radius, y0 + radius
            x1, y1 = x1 - radius, y1 - radius
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append((x0, y0, x1 - x0, y1 - y0))
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def window_boxes(seeds: np.ndarray, sizes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Windows of each typical object size centred on each seed box's centre (clipped)."""
    if not len(seeds) or not len(sizes):
        return np.empty((0, 4))
    cx = seeds[:, 0] + seeds[:, 2] / 2
    cy = seeds[:, 1] + seeds[:, 3] / 2
    w = np.repeat(sizes[:, 0][None], len(seeds), 0).ravel()
    h = np.repeat(sizes[:, 1][None], len(seeds), 0).ravel()
    cx, cy = np.repeat(cx, len(sizes)), np.repeat(cy, len(sizes))
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    return clip_boxes(boxes, width, height)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes cut to the image (those left without area are dropped)."""
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    return out[(out[:, 2] > 1) & (out[:, 3] > 1)]


def propose(contrast: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
    """Candidate boxes (N, 4: x, y, w, h, float pixels) of an image's contrast map.

    ``sizes``: typical (w, h) of the objects (from training) for the sliding-window boxes.
    """
    height, width = contrast.shape
    boxes = component_boxes(contrast)
    ok = ((boxes[:, 2] >= MIN_SIDE) | (boxes[:, 3] >= MIN_SIDE)) \
        & (boxes[:, 2] <= MAX_SHARE * width) & (boxes[:, 3] <= MAX_SHARE * height)
    boxes = dedupe(boxes[ok])
    if sizes is not None and len(sizes):
        sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
        pieces = boxes[boxes[:, 2] * boxes[:, 3] < 0.5 * (sizes[:, 0] * sizes[:, 1]).min()]
        if len(pieces):
            boxes = dedupe(np.concatenate([boxes, window_boxes(pieces, sizes, width, height)]))
    return boxes
