"""``make_synthetic(count, image_size, seed)``: a built-in segmentation task that needs no download.

It is made hard on purpose, so that architectures really differ on it: thin, branching curvilinear
"vessels" 1-4 px wide (need full-resolution detail), small round/elliptic blobs of 2-14 px, most
under 8 px (die in a deep encoder without good skips), on an unevenly lit, noisy, slightly blurred
background with a foreground contrast that varies per image and per object and is sometimes low.

Pure numpy and vectorised over the whole batch: every object is rasterised as "stamps" (centre
plus a small pixel neighbourhood tested against the shape), so 96 images of 128 px take a few
tenths of a second. One ``numpy.random.Generator`` seeded by ``seed`` draws everything in a fixed
order, so the same seed always gives the same arrays.
"""
from __future__ import annotations

import numpy as np

SYNTHETIC_NAME = "synthetic"
SYNTHETIC_KINDS = ("default", "vessels", "blobs", "volumes", "classes")  # ``synthetic:<kind>``; plain = default
CLASS_NAMES = ("background", "curve", "blob", "region")  # ``synthetic:classes`` labels 0..3
CLASS_COLOURS = ((0, 0, 0), (214, 39, 40), (255, 187, 0), (31, 119, 180))

_STEP = 0.5  # px between samples along a vessel: dense enough that a 1 px line has no gaps
_VESSEL_RADIUS = (0.5, 2.0)  # radius at the root: widths of 1 to 4 px
_BLOB_DIAMETER = (2.0, 14.0)


def make_synthetic(count: int, image_size: int, seed: int, kind: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, masks)``, both float32 ``(count, 1, S, S)``; images in [0, 1], masks in {0, 1}.

    ``kind``: ``default`` (vessels + small blobs; unchanged since the first release), ``vessels``
    (vessels only), ``blobs`` (blobs only, 2-40 px across, so every size stratum is populated) or
    ``volumes`` (``(count, 1, S, S, S)``, see ``make_synthetic_volumes``) or ``classes`` (label maps
    0..3, see ``make_synthetic_classes``).
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(SYNTHETIC_KINDS)}")
    if count < 0 or image_size < 8:
        raise ValueError(f"make_synthetic needs count >= 0 and image_size >= 8, got {count}, {image_size}")
    if kind == "volumes":
        return make_synthetic_volumes(count, image_size, seed)
    if kind == "classes":
        return make_synthetic_classes(count, image_size, seed)
    rng = np.random.default_rng(seed)
    size = int(image_size)
    scale = size / 64.0  # object counts follow the area; object sizes stay in pixels
    contrast = np.zeros(count * size * size, dtype=np.float32)  # per-pixel foreground contrast
    image_contrast = rng.uniform(0.1, 0.4, count)  # how visible this image's foreground is

    if kind in ("default", "vessels"):
        _draw_vessels(rng, contrast, count, size, scale, image_contrast)
    if kind == "default":
        _draw_blobs(rng, contrast, count, size, scale, image_contrast)
    elif kind == "blobs":
        _draw_blobs(rng, contrast, count, size, scale, image_contrast, diameter=(2.0, 40.0), density=0.75)

    contrast = contrast.reshape(count, size, size)
    masks = (contrast > 0).astype(np.float32)
    return _render(rng, contrast, count, size), masks[:, None]


def _render(rng, contrast, count, size) -> np.ndarray:
    """``(count, 1, S, S)`` images: background + per-pixel ``contrast`` with texture, blur and noise."""
    # A little texture inside objects, so foreground is not one flat level.
    texture = 1.0 + 0.25 * rng.standard_normal((count, size, size), dtype=np.float32)
    images = _background(rng, count, size) + contrast * texture
    images = _blur(images, rng.uniform(0.4, 1.0, count))
    images += rng.standard_normal((count, size, size), dtype=np.float32) * rng.uniform(
        0.02, 0.07, (count, 1, 1)
    ).astype(np.float32)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return images[:, None]


def make_synthetic_classes(count: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 3-foreground-class task (K = 4, ``CLASS_NAMES``): thin curves (1), small blobs 2-10 px (2) and
    large dark regions 20-48 px (3); masks ``(count, 1, S, S)`` hold the label values as floats.

    Curves and blobs are brighter than the background, regions darker; where they overlap, blobs
    win over curves and curves over regions, so each class stays learnable from its shape and sign.
    """
    rng = np.random.default_rng(seed)
    size = int(image_size)
    scale = size / 64.0
    image_contrast = rng.uniform(0.15, 0.4, count)
    layers = [np.zeros(count * size * size, dtype=np.float32) for _ in range(3)]
    _draw_blobs(rng, layers[2], count, size, scale, image_contrast, diameter=(20.0, 48.0), density=0.2)
    _draw_vessels(rng, layers[0], count, size, scale, image_contrast)
    _draw_blobs(rng, layers[1], count, size, scale, image_contrast, diameter=(2.0, 10.0))
    curve, blob, region = (layer.reshape(count, size, size) for layer in layers)
    labels = np.zeros((count, size, size), dtype=np.float32)
    for value, layer in ((3, region), (1, curve), (2, blob)):  # later wins: region < curve < blob
        labels[layer > 0] = value
    contrast = np.where(labels == 3, -0.8 * region, np.maximum(curve, blob)).astype(np.float32)
    return _render(rng, contrast, count, size), labels[:, None]


def _draw_vessels(rng, contrast, count, size, scale, image_contrast) -> None:
    """Trees of smooth meandering curves: a few roots per image, each with 0-2 thinner branches."""
    trees = rng.integers(max(1, round(1.5 * scale)), round(3.5 * scale) + 1, count)
    owner = np.repeat(np.arange(count), trees)
    n = owner.size
    start = rng.uniform(0.05 * size, 0.95 * size, (n, 2))
    heading = rng.uniform(0, 2 * np.pi, n)
    length = rng.uniform(0.5, 1.3, n) * size
    r0 = rng.uniform(*_VESSEL_RADIUS, n)
    r1 = np.maximum(0.5, r0 * rng.uniform(0.4, 1.0, n))
    level = image_contrast[owner] * rng.uniform(0.5, 1.3, n)
    points, radii = _walk(rng, start, heading, length, r0, r1, size)
    _stamp_curves(contrast, owner, points, radii, level, size)

    # Branches leave a root at a random point, at an angle, thinner than the root there.
    branches = rng.integers(0, 3, n)
    parent = np.repeat(np.arange(n), branches)
    if parent.size == 0:
        return
    m = parent.size
    at = (rng.uniform(0.1, 0.8, m) * length[parent] / _STEP).astype(int)
    b_start = points[parent, at]
    b_heading = _headings_at(points, parent, at) + rng.choice([-1.0, 1.0], m) * rng.uniform(0.4, 1.1, m)
    b_length = rng.uniform(0.25, 0.7, m) * size
    b_r0 = np.maximum(0.5, radii[parent, at] * rng.uniform(0.5, 0.9, m))
    b_r1 = np.maximum(0.5, b_r0 * rng.uniform(0.4, 1.0, m))
    b_level = level[parent] * rng.uniform(0.7, 1.0, m)
    b_points, b_radii = _walk(rng, b_start, b_heading, b_length, b_r0, b_r1, size)
    _stamp_curves(contrast, owner[parent], b_points, b_radii, b_level, size)


def _walk(rng, start, heading0, length, r0, r1, size):
    """Smooth random curves sampled every ``_STEP`` px: heading = start + a few random sines of arc length.

    Returns points ``(n, N, 2)`` (NaN past each curve's length) and radii ``(n, N)``, tapering r0 -> r1.
    """
    n = start.shape[0]
    steps = int(np.ceil(length.max() / _STEP)) + 1 if n else 1
    s = np.arange(steps) * _STEP  # arc length, (N,)
    freq = rng.uniform(0.5, 3.0, (n, 3, 1)) / size  # cycles per px: a few meanders per image
    amp = rng.uniform(0.1, 0.8, (n, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    heading = heading0[:, None] + (amp * np.sin(2 * np.pi * freq * s + phase)).sum(1)  # (n, N)
    delta = np.stack([np.sin(heading), np.cos(heading)], -1) * _STEP  # (n, N, 2) as (dy, dx)
    points = start[:, None, :] + np.cumsum(delta, 1) - delta[:, :1]
    frac = np.clip(s[None, :] / length[:, None], 0.0, 1.0)
    radii = r0[:, None] + (r1 - r0)[:, None] * frac
    points[s[None, :] > length[:, None]] = np.nan
    return points, radii


def _headings_at(points, curve, index):
    """Direction of travel of ``points[curve]`` at ``index`` (from the next sample)."""
    d = points[curve, index + 1] - points[curve, index]
    return np.arctan2(d[:, 0], d[:, 1])


def _stamp_curves(contrast, owner, points, radii, level, size) -> None:
    """Pixels whose centre lies within the local radius of any sample point.

    Samples with radius <= 1 only need the 3x3 pixels around them, the rest 5x5: half the work.
    """
    n, steps = radii.shape
    keep = ~np.isnan(points[..., 0])
    centres = points[keep].astype(np.float32)  # (K, 2)
    radius = radii[keep].astype(np.float32)
    img = np.repeat(owner, steps).reshape(n, steps)[keep]
    value = np.repeat(level, steps).reshape(n, steps)[keep].astype(np.float32)
    thin = radius <= 1.0
    for select, reach in ((thin, 1), (~thin, int(np.ceil(_VESSEL_RADIUS[1])))):
        c = centres[select]
        oy, ox = _offsets(reach)
        py = np.rint(c[:, 0:1]).astype(np.int64) + oy  # (k, offsets)
        px = np.rint(c[:, 1:2]).astype(np.int64) + ox
        inside = (py - c[:, 0:1]) ** 2 + (px - c[:, 1:2]) ** 2 <= radius[select][:, None] ** 2
        values = np.broadcast_to(value[select][:, None], py.shape)
        _scatter_max(contrast, img[select], py, px, inside, values, size)


def _offsets(reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the ``(2 reach + 1)^2`` pixel square around a centre."""
    off = np.arange(-reach, reach + 1)
    return tuple(a.ravel() for a in np.meshgrid(off, off, indexing="ij"))


def _draw_blobs(rng, contrast, count, size, scale, image_contrast, diameter=_BLOB_DIAMETER,
                density=1.0) -> None:
    """Filled ellipses; diameter = lo + (hi - lo) u^2 px (default 2-14: about 70% under 8 px across)."""
    per_image = rng.integers(max(1, round(4 * density * scale**2)), round(12 * density * scale**2) + 1, count)
    owner = np.repeat(np.arange(count), per_image)
    n = owner.size
    lo, hi = diameter
    semi_a = (lo + (hi - lo) * rng.uniform(0, 1, n) ** 2) / 2
    semi_b = np.maximum(0.8, semi_a * rng.uniform(0.55, 1.0, n))
    angle = rng.uniform(0, np.pi, n)
    centre = rng.uniform(0, size - 1, (n, 2))
    level = image_contrast[owner] * rng.uniform(0.5, 1.3, n)

    oy, ox = _offsets(int(np.ceil(hi / 2)))
    py = np.rint(centre[:, 0:1]).astype(np.int64) + oy  # (n, k)
    px = np.rint(centre[:, 1:2]).astype(np.int64) + ox
    dy, dx = py - centre[:, 0:1], px - centre[:, 1:2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    inside = (u / semi_a[:, None]) ** 2 + (v / semi_b[:, None]) ** 2 <= 1.0
    _scatter_max(contrast, owner, py, px, inside, np.broadcast_to(level[:, None], py.shape), size)


def _scatter_max(contrast, img, py, px, inside, values, size) -> None:
    """``contrast[img, py, px] = max(current, value)`` for the stamped pixels that are in the image."""
    valid = inside & (py >= 0) & (py < size) & (px >= 0) & (px < size)
    rows = np.broadcast_to(np.asarray(img)[:, None], py.shape)
    flat = (rows[valid] * size + py[valid]) * size + px[valid]
    np.maximum.at(contrast, flat, values[valid].astype(np.float32))


def _background(rng, count, size) -> np.ndarray:
    """Base level + linear illumination gradient + a smooth low-frequency field (bilinear 5x5 grid)."""
    coords = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    base = rng.uniform(0.15, 0.45, (count, 1, 1))
    tilt = rng.uniform(0.0, 0.3, (count, 1, 1))
    direction = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    gradient = tilt * (np.cos(direction) * coords[None, :, None] + np.sin(direction) * coords[None, None, :])
    grid = rng.normal(0.0, 1.0, (count, 5, 5)) * rng.uniform(0.03, 0.12, (count, 1, 1))
    interp = _bilinear_matrix(5, size)  # (S, 5)
    field = interp @ grid @ interp.T
    return (base + gradient + field).astype(np.float32)


def _bilinear_matrix(coarse: int, size: int) -> np.ndarray:
    """``(size, coarse)`` matrix that linearly interpolates ``coarse`` knots onto ``size`` pixels."""
    pos = np.linspace(0, coarse - 1, size)
    left = np.minimum(np.floor(pos).astype(int), coarse - 2)
    weight = pos - left
    matrix = np.zeros((size, coarse))
    matrix[np.arange(size), left] = 1 - weight
    matrix[np.arange(size), left + 1] = weight
    return matrix


def _blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur (7 taps, edge-padded) with a per-image sigma: shifted sums, no BLAS."""
    reach = 3
    taps = np.arange(-reach, reach + 1, dtype=np.float32)
    weights = np.exp(-taps[None] ** 2 / (2 * sigma.astype(np.float32)[:, None] ** 2))
    weights /= weights.sum(1, keepdims=True)  # (B, 7)
    size = images.shape[-1]
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (reach, reach)
        padded = np.pad(images, pad, mode="edge")
        out = np.zeros_like(images)
        for i in range(2 * reach + 1):
            window = padded[:, i:i + size] if axis == 1 else padded[:, :, i:i + size]
            out += weights[:, i, None, None] * window
        images = out
    return images


def make_synthetic_volumes(count: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images, masks)`` float32 ``(count, 1, S, S, S)``: ellipsoid blobs 2-16 px across and straight
    tubes 2-4 px thick on a noisy, unevenly lit background (a small 3-D task for the 3-D space)."""
    rng = np.random.default_rng(seed)
    size = int(side)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"), -1)  # (S, S, S, 3)
    contrast = np.zeros((count, size, size, size), dtype=np.float32)
    for index in range(count):
        level = rng.uniform(0.15, 0.4)
        for _ in range(int(rng.integers(3, 9))):
            centre = rng.uniform(0, size - 1, 3).astype(np.float32)
            semi = (2.0 + 14.0 * rng.uniform() ** 2) / 2 * rng.uniform(0.6, 1.0, 3)
            inside = (((grid - centre) / semi.astype(np.float32)) ** 2).sum(-1) <= 1.0
            contrast[index][inside] = np.maximum(contrast[index][inside], level * rng.uniform(0.6, 1.3))
        for _ in range(int(rng.integers(1, 3))):
            start = rng.uniform(0, size - 1, 3).astype(np.float32)
            direction = rng.normal(size=3).astype(np.float32)
            direction /= np.linalg.norm(direction) + 1e-6
            offset = grid - start
            distance = np.linalg.norm(offset - (offset @ direction)[..., None] * direction, axis=-1)
            inside = distance <= rng.uniform(1.0, 2.0)
            contrast[index][inside] = np.maximum(contrast[index][inside], level * rng.uniform(0.6, 1.3))
    masks = (contrast > 0).astype(np.float32)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    tilt = rng.uniform(0.0, 0.3, (count, 1, 1, 1)).astype(np.float32)
    background = rng.uniform(0.15, 0.45, (count, 1, 1, 1)).astype(np.float32) + tilt * ramp[None, :, None, None]
    noise = rng.standard_normal(contrast.shape, dtype=np.float32) * rng.uniform(0.02, 0.06, (count, 1, 1, 1))
    images = np.clip(background + contrast + noise.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return images[:, None], masks[:, None]
