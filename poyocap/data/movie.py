"""Movie frames: a procedural naturalistic movie (synthetic default) and the real template (Allen).

The Allen "natural movie one" is a copyrighted film clip and is never shipped. The synthetic observatory
shows instead a procedural movie built from photographs that ship inside scikit-image and are free to use
(licences as stated in ``skimage.data``'s docstrings, checked for this list):

=================== ============================================================
image               licence (skimage.data docstring)
=================== ============================================================
astronaut           public domain (NASA)
camera              CC0 (Lav Varshney)
chelsea             CC0 (Stefan van der Walt)
coffee              CC0 (Rachel Michetti)
rocket              public domain (SpaceX)
grass, gravel, brick CC0 (cc0textures.com)
coins               no known copyright restrictions
horse               CC0 (Andreas Preuss)
=================== ============================================================

The movie is a sequence of *shots* (2-5 s each, separated by cuts); within a shot a 1:2 crop window pans
and zooms slowly across one photograph, like a hand-held camera. Photographs are natural images, so the
frames carry the 1/f amplitude spectrum of natural scenes (:func:`spectral_slope` measures it; about -1
for amplitude, -2 for power). Grayscale, 30 fps, uint8, and deterministic from the seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PHOTOGRAPHS: tuple[str, ...] = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "grass", "gravel", "brick", "coins", "horse",
)


def _photograph(name: str) -> np.ndarray:
    """Grayscale float image in [0, 1] from scikit-image's bundled data (no download)."""
    import skimage.color
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 3:
        img = skimage.color.rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return img


def procedural_movie(n_frames: int, height: int, width: int, seed: int = 0, fps: float = 30.0) -> np.ndarray:
    """A naturalistic movie ``uint8 (n_frames, height, width)``: pans, zooms and cuts over photographs.

    Deterministic from ``seed``. Each shot lasts 2-5 s; the crop window has the frame's aspect ratio and
    drifts/zooms smoothly (linear interpolation of its centre and size from a start to an end pose).
    """
    if n_frames <= 0 or height <= 0 or width <= 0:
        raise ValueError(f"movie size must be positive, got {(n_frames, height, width)}")
    rng = np.random.default_rng(seed)
    images = {name: _photograph(name) for name in PHOTOGRAPHS}
    blurred: dict[tuple[str, float], np.ndarray] = {}  # anti-aliased copies, per call (keyed by name, not id())
    order = rng.permutation(len(PHOTOGRAPHS))
    frames = np.empty((n_frames, height, width), dtype=np.float64)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, height), np.linspace(-0.5, 0.5, width), indexing="ij")
    t0, shot = 0, 0
    while t0 < n_frames:
        length = int(min(n_frames - t0, round(rng.uniform(2.0, 5.0) * fps)))
        name = PHOTOGRAPHS[order[shot % len(order)]]
        img = images[name]
        ih, iw = img.shape
        aspect = width / height
        # crop width in image pixels at the start and end of the shot (zoom), clipped to fit
        max_w = min(iw, ih * aspect)
        w_start, w_end = rng.uniform(0.45, 0.95, size=2) * max_w
        pose = []
        for w_crop in (w_start, w_end):
            h_crop = w_crop / aspect
            cy = rng.uniform(h_crop / 2, ih - h_crop / 2)
            cx = rng.uniform(w_crop / 2, iw - w_crop / 2)
            pose.append((cy, cx, w_crop))
        alpha = np.linspace(0.0, 1.0, length)
        for k, a in enumerate(alpha):
            cy = (1 - a) * pose[0][0] + a * pose[1][0]
            cx = (1 - a) * pose[0][1] + a * pose[1][1]
            w_crop = (1 - a) * pose[0][2] + a * pose[1][2]
            h_crop = w_crop / aspect
            coords = np.stack([cy + yy * h_crop, cx + xx * w_crop])
            # anti-alias before sampling: blur by the crop-to-frame scale
            sigma = max(0.0, 0.5 * (w_crop / width - 1.0))
            if sigma < 0.3:
                src = img
            else:
                key = (name, round(sigma, 1))
                if key not in blurred:
                    blurred[key] = ndimage.gaussian_filter(img, key[1])
                src = blurred[key]
            frames[t0 + k] = ndimage.map_coordinates(src, coords, order=1, mode="reflect")
        t0 += length
        shot += 1
    # normalise to the full 8-bit range with a robust (1-99 %) stretch, as a monitor's gamma-corrected movie
    lo, hi = np.percentile(frames, [1, 99])
    frames = np.clip((frames - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.round(frames * 255.0).astype(np.uint8)


def resize_movie(movie: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average/bilinear resize of ``uint8 (F, H, W)`` to ``(F, height, width)`` (used for the Allen template)."""
    import skimage.transform

    out = skimage.transform.resize(movie.astype(np.float32) / 255.0, (movie.shape[0], height, width),
                                   anti_aliasing=True, preserve_range=True)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def spectral_slope(movie: np.ndarray) -> float:
    """Slope of log amplitude spectrum vs log spatial frequency, averaged over frames (natural images: ~ -1)."""
    frames = movie.astype(np.float64)
    frames = frames - frames.mean(axis=(1, 2), keepdims=True)
    h, w = frames.shape[1:]
    window = np.outer(np.hanning(h), np.hanning(w))
    amp = np.abs(np.fft.fft2(frames * window)).mean(axis=0)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    mask = (f > 2.0 / min(h, w)) & (f < 0.4)
    slope, _ = np.polyfit(np.log(f[mask]), np.log(amp[mask] + 1e-12), 1)
    return float(slope)
