"""Feature partitions of an input: lists of disjoint index arrays over the flattened input.

For images (C, H, W) a feature is a set of pixels and holds all channels of each pixel.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _pixels_to_dims(pixel_sets: list[np.ndarray], shape: tuple[int, ...]) -> list[np.ndarray]:
    c = shape[0] if len(shape) == 3 else 1
    hw = shape[-2] * shape[-1]
    return [np.sort(np.concatenate([p + ch * hw for ch in range(c)])) for p in pixel_sets if len(p)]


def grid(shape: tuple[int, ...], rows: int, cols: int) -> list[np.ndarray]:
    """rows x cols boxes over the image plane (the paper's grid/box partition)."""
    h, w = shape[-2], shape[-1]
    if not (1 <= rows <= h and 1 <= cols <= w):
        raise ValueError(f"grid({rows}, {cols}) does not fit an image of {h}x{w}")
    r_edges = np.linspace(0, h, rows + 1).round().astype(int)
    c_edges = np.linspace(0, w, cols + 1).round().astype(int)
    idx = np.arange(h * w).reshape(h, w)
    boxes = [idx[r_edges[i]:r_edges[i + 1], c_edges[j]:c_edges[j + 1]].ravel()
             for i in range(rows) for j in range(cols)]
    return _pixels_to_dims(boxes, shape)


def saliency(x: np.ndarray, effect: Callable[[np.ndarray], np.ndarray], k: int, delta: float = 0.1) -> list[np.ndarray]:
    """Grey-box saliency (the paper's first extraction): rank dimensions by how much a change of
    ``delta`` lowers the predicted class's score, then cut the ranking into k features.

    ``effect(points (B, n)) -> scores (B,)`` evaluates the predicted class's score; one batched
    call of n points."""
    flat = x.reshape(-1)
    n = flat.size
    if not 1 <= k <= n:
        raise ValueError(f"saliency needs 1 <= k <= {n}, not {k}")
    pts = np.repeat(flat[None], n, axis=0)
    pts[np.arange(n), np.arange(n)] += np.where(flat[np.arange(n)] > 0.5, -delta, delta)
    drop = effect(flat[None])[0] - effect(pts)
    order = np.argsort(-drop, kind="stable")
    return [np.sort(part) for part in np.array_split(order, k)]


def superpixels(image: np.ndarray, n_segments: int = 16, compactness: float = 10.0) -> list[np.ndarray]:
    """SLIC superpixels (scikit-image) over a (C, H, W) or (H, W) image in [0, 1]."""
    from skimage.segmentation import slic

    shape = image.shape
    img = image[0] if image.ndim == 3 and image.shape[0] == 1 else (
        image.transpose(1, 2, 0) if image.ndim == 3 else image)
    labels = slic(img, n_segments=n_segments, compactness=compactness, start_label=0,
                  channel_axis=-1 if img.ndim == 3 else None)
    flat = labels.ravel()
    return _pixels_to_dims([np.nonzero(flat == v)[0] for v in np.unique(flat)], shape)


def sift(image: np.ndarray, max_features: int = 16) -> list[np.ndarray]:
    """Black-box SIFT partition: keypoints from scikit-image's SIFT; every pixel goes to the
    keypoint with the smallest scaled distance |p - k| / sigma_k (the paper assigns pixels to
    keypoints by their Gaussian regions). Needs images large enough for SIFT (about 16x16 and up)."""
    from skimage.feature import SIFT

    shape = image.shape
    gray = image.mean(axis=0) if image.ndim == 3 else image
    det = SIFT()
    try:
        det.detect(gray)
    except Exception as err:  # scikit-image raises on images too small for its octaves
        raise ValueError(f"SIFT found no keypoints in a {gray.shape[0]}x{gray.shape[1]} image ({err})") from None
    pts, sig = det.keypoints[:max_features], det.sigmas[:max_features]
    if len(pts) == 0:
        raise ValueError("SIFT found no keypoints")
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy[..., None] - pts[:, 0], xx[..., None] - pts[:, 1]) / sig
    owner = d.argmin(axis=-1).ravel()
    return _pixels_to_dims([np.nonzero(owner == i)[0] for i in range(len(pts))], shape)


def by_name(name: str, args: dict, shape: tuple[int, ...], x: np.ndarray,
            score: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """The partition a spec names: grid(rows, cols), saliency(k), superpixels(n, compactness=..),
    sift(n). Positional arguments arrive as "_0", "_1"; ``score`` (points -> predicted class's
    score) is needed by saliency only."""
    image_shape = shape if len(shape) == 3 else (1,) + tuple(shape[-2:]) if len(shape) >= 2 else None
    img = x.reshape(shape)
    if name == "saliency":
        if score is None:
            raise ValueError("saliency needs the model")
        return saliency(x.reshape(-1), score, int(args.get("_0", args.get("k", 8))))
    if image_shape is None:
        raise ValueError(f"the {name} partition needs image inputs (C, H, W), not shape {tuple(shape)}")
    if name == "grid":
        rows = int(args.get("_0", 4))
        return grid(image_shape, rows, int(args.get("_1", rows)))
    if name == "superpixels":
        return superpixels(img.reshape(image_shape), int(args.get("_0", args.get("n", 16))),
                           float(args.get("compactness", 10.0)))
    if name == "sift":
        return sift(img.reshape(image_shape), int(args.get("_0", args.get("n", 16))))
    raise ValueError(f"unknown partition {name!r}")
