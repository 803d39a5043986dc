"""Trajectory videos: shaded cubes, cylinders and cones moving along four kinds of paths.

Design choices:
- The scene is 3D and seen through a pinhole camera a little above a ground plane, pitched
  down, with a sky above the horizon. Farther objects are smaller and sit higher in the image,
  the ground fades into haze with distance, and each object casts a soft shadow below itself
  (the shadow is what shows a bouncing object's height).
- Every shape is a convex polyhedron (cylinders and cones get `facets` sides), so back-face
  culling alone resolves each object's own occlusion and every visible face is a convex
  polygon. Faces are filled with vectorised numpy: the signed distance of each pixel centre to
  every edge, minimised over edges, gives an anti-aliased coverage clip(0.5 + d, 0, 1). Each
  face is evaluated only on a small window around it, for all objects and frames in one
  batch, then summed into per-object windows. Objects are composited far to near, per frame
  (painter's order). Faces are shaded flat: ambient + Lambert.
- Label: all objects of a clip follow the same trajectory class (with their own speed, size,
  direction and phase), and the clip's label is that class's index in TRAJECTORY_CLASSES.
  One class per clip keeps the label unambiguous whatever the number of objects.
- Paths are given in normalised clip time s in [0, 1], so an object travels about `travel` of
  the view width over a clip whatever its length (about 1-2 px per frame for the 17-frame,
  32 px `tiny` preset). Bounces are elastic (periodic parabolas). Each object draws
  PATH_CANDIDATES paths at once, each slid sideways into the view, and keeps the first one
  that stays in view at every frame.
- A clip is a pure function of (seed, split, index): numpy's Generator seeded with the
  SeedSequence (seed, split id, index). Train and eval use different split ids, hence
  independent streams. No global random state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.clips import check_frame_counts, to_model_range
from shared.errors import ConfigError

TRAJECTORY_CLASSES: tuple[str, ...] = ("linear", "circular", "parabolic", "zigzag")
SHAPES: tuple[str, ...] = ("cube", "cylinder", "cone")
# eval: the held-out split the report's numbers come from; validation: the one choices are
# made on (readout, epochs, batch size...), so no choice has seen the held-out clips.
SPLITS: dict[str, int] = {"train": 0, "eval": 1, "validation": 2}

# Camera and scene, in world units (the ground is y = 0, the camera looks along +z).
FOV_DEGREES = 45.0  # horizontal field of view
CAMERA_HEIGHT = 2.2
CAMERA_PITCH = math.radians(14.0)  # looking down, so the horizon sits in the upper third
DEPTH_RANGE = (4.0, 9.0)  # where paths are anchored, in front of the camera
HAZE_DISTANCE = 14.0  # ground colour fades to the horizon haze over about this distance
AMBIENT = 0.35  # shading = AMBIENT + (1 - AMBIENT) * max(0, n . light)
SHADOW_STRENGTH = 0.45
VIEW_FILL = 0.9  # paths keep within this fraction of the view's half-width
OBJECT_HALF_WIDTH = 0.5  # world units, about half an object
PATH_CANDIDATES = 12  # paths drawn per object; the first that stays in view is kept


@dataclass(frozen=True, kw_only=True)
class TrajectoryConfig:
    resolution: int = 32  # frames are resolution x resolution pixels
    frames: int = 17  # 1 + 4k
    context_frames: int = 9  # 1 + 4j < frames: what a predictor sees; the rest is to predict
    min_objects: int = 1
    max_objects: int = 3
    seed: int = 0
    classes: tuple[str, ...] = TRAJECTORY_CLASSES  # which classes clips are drawn from
    shapes: tuple[str, ...] = SHAPES
    travel: float = 1.0  # how far an object moves over a clip, as a fraction of view width
    spin: float = (
        1.5  # largest yaw change over a clip, radians (cubes show it, round shapes barely)
    )
    facets: int = 16  # sides of the polygonal cylinders and cones
    shadows: bool = True

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep the config hashable and comparable.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "shapes", tuple(self.shapes))
        name = type(self).__name__
        if not isinstance(self.resolution, int) or self.resolution < 8:
            raise ConfigError(f"{name}.resolution={self.resolution!r}: use an integer >= 8")
        check_frame_counts(self.frames, self.context_frames, owner=name)
        if not (1 <= self.min_objects <= self.max_objects <= 8):
            raise ConfigError(
                f"{name}.min_objects={self.min_objects}, max_objects={self.max_objects}: "
                "use 1 <= min_objects <= max_objects <= 8"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"{name}.seed={self.seed!r}: use a non-negative integer")
        unknown = [c for c in self.classes if c not in TRAJECTORY_CLASSES]
        if not self.classes or unknown:
            raise ConfigError(
                f"{name}.classes={list(self.classes)}: choose one or more of "
                f"{list(TRAJECTORY_CLASSES)}"
            )
        unknown = [s for s in self.shapes if s not in SHAPES]
        if not self.shapes or unknown:
            raise ConfigError(
                f"{name}.shapes={list(self.shapes)}: choose one or more of {list(SHAPES)}"
            )
        if not (0.0 < self.travel <= 2.0):
            raise ConfigError(f"{name}.travel={self.travel!r}: use a fraction in (0, 2]")
        if not (0.0 <= self.spin <= 2 * math.pi):
            raise ConfigError(f"{name}.spin={self.spin!r}: use radians in [0, 2*pi]")
        if not isinstance(self.facets, int) or not (5 <= self.facets <= 64):
            raise ConfigError(f"{name}.facets={self.facets!r}: use an integer in [5, 64]")

    @property
    def future_frames(self) -> int:
        return self.frames - self.context_frames


def _micro() -> TrajectoryConfig:
    # Tests and gates: tiny frames, few facets, at most two objects.
    return TrajectoryConfig(resolution=16, frames=9, context_frames=5, max_objects=2, facets=8)


def _tiny() -> TrajectoryConfig:
    return TrajectoryConfig(resolution=32, frames=17, context_frames=9, facets=12)


def _full() -> TrajectoryConfig:
    return TrajectoryConfig(resolution=128, frames=17, context_frames=9, facets=24)


TRAJECTORY_PRESETS: dict[str, Callable[[], TrajectoryConfig]] = {
    "micro": _micro,
    "tiny": _tiny,
    "full": _full,
}


def trajectory_config(preset: str, **overrides: Any) -> TrajectoryConfig:
    """A preset by name, optionally with some fields replaced (validated again)."""
    if preset not in TRAJECTORY_PRESETS:
        raise ConfigError(
            f"unknown trajectory preset {preset!r}: choose one of {sorted(TRAJECTORY_PRESETS)}"
        )
    config = TRAJECTORY_PRESETS[preset]()
    try:
        return replace(config, **overrides)
    except TypeError as error:  # an unknown field name
        raise ConfigError(f"trajectory preset {preset!r}: {error}") from None


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Mesh:
    """A convex polyhedron in local coordinates, base on y = 0, centred on the y axis.

    Faces come in two dense groups so that every group is one array: `quads` (4 vertex indices
    in cyclic order; a triangle repeats its last vertex) and `caps` (`facets` indices).
    """

    vertices_v3: np.ndarray  # (V, 3)
    quads_f4: np.ndarray
    quad_normals_f3: np.ndarray  # outward unit normals
    caps_fc: np.ndarray  # (0..2, facets)
    cap_normals_f3: np.ndarray
    footprint_c: np.ndarray  # (facets,) the base polygon, for the shadow
    height: float


def _ring(radius: float, y: float, n: int) -> np.ndarray:
    angles = 2 * np.pi * (np.arange(n) + 0.5) / n
    return np.stack([radius * np.cos(angles), np.full(n, y), radius * np.sin(angles)], axis=1)


def _pad_to(indices: np.ndarray, width: int) -> np.ndarray:
    """Repeat the last index so a cyclic polygon has `width` vertices (zero-length edges)."""
    extra = np.repeat(indices[..., -1:], width - indices.shape[-1], axis=-1)
    return np.concatenate([indices, extra], axis=-1)


def _cube(size: float, facets: int) -> _Mesh:
    h = size / 2
    corners = np.array(
        [[x, y, z] for y in (0.0, size) for z in (-h, h) for x in (-h, h)], dtype=np.float64
    )  # index = 4 * top + 2 * back + right
    quads = np.array(
        [[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]
    )
    normals = np.array(
        [[0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1], [-1, 0, 0], [1, 0, 0]], dtype=np.float64
    )
    no_caps = np.zeros((0, facets), np.int64)
    return _Mesh(
        corners, quads, normals, no_caps, np.zeros((0, 3)), _pad_to(quads[0], facets), size
    )


def _cylinder(radius: float, height: float, n: int) -> _Mesh:
    vertices = np.concatenate([_ring(radius, 0.0, n), _ring(radius, height, n)])
    i = np.arange(n)
    sides = np.stack([i, (i + 1) % n, n + (i + 1) % n, n + i], axis=1)
    mid = 2 * np.pi * (i + 1) / n  # between vertex i and i + 1
    side_normals = np.stack([np.cos(mid), np.zeros(n), np.sin(mid)], axis=1)
    caps = np.stack([i, n + i])
    cap_normals = np.array([[0, -1, 0], [0, 1, 0]], dtype=np.float64)
    return _Mesh(vertices, sides, side_normals, caps, cap_normals, i, height)


def _cone(radius: float, height: float, n: int) -> _Mesh:
    vertices = np.concatenate([_ring(radius, 0.0, n), [[0.0, height, 0.0]]])
    i = np.arange(n)
    sides = np.stack([i, (i + 1) % n, np.full(n, n), np.full(n, n)], axis=1)
    mid = 2 * np.pi * (i + 1) / n
    # perpendicular to the slant line from the rim (r, 0) to the apex (0, h)
    side_normals = np.stack([height * np.cos(mid), np.full(n, radius), height * np.sin(mid)], 1)
    side_normals /= np.linalg.norm(side_normals, axis=1, keepdims=True)
    base_normal = np.array([[0, -1, 0]], dtype=np.float64)
    return _Mesh(vertices, sides, side_normals, i[None], base_normal, i, height)


def _make_mesh(shape: str, size: float, proportions: np.ndarray, facets: int) -> _Mesh:
    """`proportions`: two numbers in [0, 1) that set width and height of round shapes."""
    if shape == "cube":
        return _cube(size * 0.85, facets)
    wide, tall = proportions
    if shape == "cylinder":
        return _cylinder(size * (0.38 + 0.17 * wide), size * (0.8 + 0.5 * tall), facets)
    assert shape == "cone", shape
    return _cone(size * (0.45 + 0.15 * wide), size * (1.0 + 0.5 * tall), facets)


@dataclass(frozen=True)
class _FaceGroup:
    """One face group of all N objects, padded to common sizes."""

    starts_nfe: np.ndarray  # vertex index of each edge's start
    ends_nfe: np.ndarray  # ... and of its end
    normals_nf3: np.ndarray
    valid_nf: np.ndarray  # False for padding faces


def _face_group(faces: list[np.ndarray], normals: list[np.ndarray]) -> _FaceGroup | None:
    most = max(len(f) for f in faces)
    if most == 0:
        return None
    width = faces[0].shape[1]
    starts = np.zeros((len(faces), most, width), np.int64)
    normals_nf3 = np.zeros((len(faces), most, 3))
    valid = np.zeros((len(faces), most), bool)
    for n, (f, normal) in enumerate(zip(faces, normals, strict=True)):
        starts[n, : len(f)], normals_nf3[n, : len(f)], valid[n, : len(f)] = f, normal, True
    return _FaceGroup(starts, np.roll(starts, -1, axis=2), normals_nf3, valid)


# ----------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class _Camera:
    height: int
    width: int

    @property
    def focal(self) -> float:  # pixels
        return (self.width / 2) / math.tan(math.radians(FOV_DEGREES) / 2)

    def project(self, points_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> pixel coordinates (..., 2) (x right, y down) and depth (...)."""
        x = points_n3[..., 0]
        y = points_n3[..., 1] - CAMERA_HEIGHT
        z = points_n3[..., 2]
        cos, sin = math.cos(CAMERA_PITCH), math.sin(CAMERA_PITCH)
        up = y * cos + z * sin
        depth = np.maximum(z * cos - y * sin, 1e-3)
        f = self.focal
        pixels = np.stack([self.width / 2 + f * x / depth, self.height / 2 - f * up / depth], -1)
        return pixels, depth

    def horizon_row(self) -> float:
        return self.height / 2 - self.focal * math.tan(CAMERA_PITCH)

    def ground_distance(self, rows: np.ndarray) -> np.ndarray:
        """Depth along the ground seen at each pixel row (inf above the horizon)."""
        up = (self.height / 2 - rows) / self.focal  # ray (0, up, 1) in camera coordinates
        cos, sin = math.cos(CAMERA_PITCH), math.sin(CAMERA_PITCH)
        ray_y = up * cos - sin
        ray_z = up * sin + cos
        with np.errstate(divide="ignore"):
            return np.where(ray_y < 0, CAMERA_HEIGHT / -np.minimum(ray_y, -1e-9) * ray_z, np.inf)


# ----------------------------------------------------------------------------- paths


def _paths(
    kind: str, s_t: np.ndarray, rng: np.random.Generator, travel: float, count: int
) -> np.ndarray:
    """`count` random paths of class `kind` -> base-centre positions (count, T, 3) at times s_t."""
    near, far = DEPTH_RANGE
    tan = math.tan(math.radians(FOV_DEGREES) / 2)

    def draw(low: float, high: float) -> np.ndarray:  # one number per path, shaped (count, 1)
        return rng.uniform(low, high, (count, 1))

    depth = draw(near, far)
    anchor = np.stack([np.zeros_like(depth), np.zeros_like(depth), depth], -1)  # (count, 1, 3)
    sideways = draw(0, 1)  # where the path goes within the room it has, see below
    length = travel * (near + far) * tan  # `travel` view widths, at the middle depth
    heading = draw(0, 2 * np.pi)
    direction = np.stack([np.cos(heading), np.zeros_like(heading), np.sin(heading)], -1)
    across = np.stack([-np.sin(heading), np.zeros_like(heading), np.cos(heading)], -1)
    centred = (s_t - 0.5)[None, :, None]  # (1, T, 1)
    if kind == "linear":
        path = anchor + centred * (draw(0.7, 1.1) * length)[..., None] * direction
    elif kind == "circular":
        radius = length * draw(0.25, 0.4)
        sweep = draw(0.8, 1.2) * length / radius * np.where(draw(0, 1) < 0.5, -1.0, 1.0)
        angle = heading + sweep * s_t  # (count, T)
        ring = np.stack([np.cos(angle), np.zeros_like(angle), np.sin(angle)], -1)
        path = anchor + radius[..., None] * ring
    elif kind == "parabolic":
        period = draw(0.3, 0.55)  # one hop, in clip time: about 2-3 bounces a clip
        peak = draw(0.7, 1.4)
        phase = (s_t / period + draw(0, 1)) % 1.0
        path = anchor + centred * (draw(0.4, 0.8) * length)[..., None] * direction
        path[..., 1] = 4 * peak * phase * (1 - phase)  # elastic bounce: a repeated parabola
    else:
        assert kind == "zigzag", kind
        period = draw(0.3, 0.5)  # one full zig and zag
        amplitude = length * draw(0.12, 0.2)
        phase = s_t / period + draw(0, 1)
        triangle = 4 * np.abs(phase - np.floor(phase + 0.5)) - 1  # in [-1, 1], slope +-4/period
        along = centred * (draw(0.7, 1.0) * length)[..., None]
        path = anchor + along * direction + (amplitude * triangle)[..., None] * across
    # Slide each path sideways to a random place where it fits the view at every frame.
    # Without this, paths that cross the view would rarely fit, and the in-view check would
    # keep mostly slow paths moving in depth.
    camera_depth = path[..., 2] * math.cos(CAMERA_PITCH) - (
        path[..., 1] - CAMERA_HEIGHT
    ) * math.sin(CAMERA_PITCH)
    room = VIEW_FILL * tan * camera_depth - OBJECT_HALF_WIDTH  # (count, T) half-width
    low = (-room - path[..., 0]).max(axis=1)
    high = (room - path[..., 0]).min(axis=1)
    shift = np.where(high >= low, low + sideways[:, 0] * (high - low), (low + high) / 2)
    path[..., 0] += shift[:, None]
    return path


def _in_view(
    camera: _Camera, positions_mt3: np.ndarray, height_m: np.ndarray, size_m: np.ndarray
) -> np.ndarray:
    """Fraction of frames (M,) in which each object's base and top stay well inside the frame."""
    top = positions_mt3.copy()
    top[..., 1] += height_m[:, None]
    (base_px, depth), (top_px, _) = camera.project(positions_mt3), camera.project(top)
    margin_x = 0.5 * size_m[:, None] * camera.focal / depth  # about half the object's width
    ok = (
        (base_px[..., 0] > margin_x)
        & (base_px[..., 0] < camera.width - margin_x)
        & (base_px[..., 1] < camera.height + 0.5)
        & (top_px[..., 1] > 0.0)
    )
    return ok.mean(axis=1)


# ----------------------------------------------------------------------------- rendering


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hue, saturation, value in [0, 1], shaped (...) -> RGB (..., 3)."""
    h, s, v = (np.asarray(x, np.float64)[..., None] for x in (h, s, v))
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _background(camera: _Camera, rng: np.random.Generator) -> np.ndarray:
    """(H * W, 3) float32: sky gradient above the horizon, ground fading into haze below."""
    rows = np.arange(camera.height) + 0.5
    low = np.array([[0.5, 0.05, 0.8], [0.53, 0.3, 0.6], [0.05, 0.15, 0.3]])
    high = np.array([[0.7, 0.2, 0.95], [0.66, 0.6, 0.85], [0.4, 0.4, 0.5]])
    haze, zenith, ground = _hsv_to_rgb(*rng.uniform(low, high).T)  # HSV ranges, one per row
    horizon = camera.horizon_row()
    sky_mix = np.clip((horizon - rows) / max(horizon, 1.0), 0, 1)[:, None]
    sky = haze + (zenith - haze) * sky_mix
    fog = (1 - np.exp(-camera.ground_distance(rows) / HAZE_DISTANCE))[:, None]
    land = ground + (haze - ground) * fog
    # blend over one pixel so the horizon is not an aliased step (land is haze above it)
    blend = np.clip(rows - horizon + 0.5, 0, 1)[:, None]
    colour_h3 = (sky * (1 - blend) + land * blend).astype(np.float32)
    return np.repeat(colour_h3, camera.width, axis=0)


def _coverage(
    start_ke2: np.ndarray, end_ke2: np.ndarray, origin_k2: np.ndarray, bh: int, bw: int
) -> np.ndarray:
    """Anti-aliased coverage (K, bh * bw) of K convex polygons, each on its own window.

    Polygon k has edges start[k, e] -> end[k, e]. A pixel's coverage is clip(0.5 + d, 0, 1),
    d its signed distance (inside > 0) to the nearest edge. Repeated vertices (padding) give
    zero-length edges, which are ignored. The distance is also capped by the distance to the
    polygon's bounding box: without that cap an acute corner (a thin face seen nearly edge-on,
    a cone's apex) would grow a long spike.
    """
    shift = origin_k2[:, None, :] + 0.5  # window coordinates of pixel centres
    start = (start_ke2 - shift).astype(np.float32)
    end = (end_ke2 - shift).astype(np.float32)
    ex, ey = end[..., 0] - start[..., 0], end[..., 1] - start[..., 1]
    cross = start[..., 0] * end[..., 1] - start[..., 1] * end[..., 0]  # sums to twice the area
    length = np.hypot(ex, ey)
    scale = np.where(cross.sum(1, keepdims=True) >= 0, 1.0, -1.0) / np.maximum(length, 1e-9)
    degenerate = length < 1e-6
    # distance to edge e at window pixel (i, j) = a * j + b * i + c; +inf for padding edges
    a = np.where(degenerate, 0.0, -ey * scale)[..., None, None].astype(np.float32)
    b = np.where(degenerate, 0.0, ex * scale)[..., None, None].astype(np.float32)
    c = np.where(degenerate, 1e6, cross * scale)[..., None, None].astype(np.float32)
    cols = np.arange(bw, dtype=np.float32)
    rows = np.arange(bh, dtype=np.float32)
    distance = (a * cols + c + b * rows[:, None]).min(axis=1)  # (K, bh, bw)
    low, high = start.min(axis=1), start.max(axis=1)
    box_x = np.minimum(cols - low[:, 0, None], high[:, 0, None] - cols)  # (K, bw)
    box_y = np.minimum(rows - low[:, 1, None], high[:, 1, None] - rows)  # (K, bh)
    np.minimum(distance, box_x[:, None, :], out=distance)
    np.minimum(distance, box_y[:, :, None], out=distance)
    distance += 0.5
    return np.clip(distance, 0.0, 1.0, out=distance).reshape(len(start), bh * bw)


def _windows(
    points_ntx2: np.ndarray,
    camera: _Camera,
    inside: tuple[np.ndarray, int, int] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Window origins (N, T, 2) (x, y) of one common size (bh, bw) covering each row's points.

    Windows are clipped to the frame, or to the given outer windows (origins shaped (N, T, 2)
    and their size), so whatever is drawn on them lands inside those.
    """
    if inside is None:
        low_limit, high_limit = np.zeros(2, np.int64), np.array([camera.width, camera.height])
    else:
        low_limit = inside[0]
        high_limit = inside[0] + np.array([inside[2], inside[1]])
    low = np.clip(np.floor(points_ntx2.min(axis=2)).astype(np.int64) - 1, low_limit, high_limit)
    high = np.clip(np.ceil(points_ntx2.max(axis=2)).astype(np.int64) + 1, low_limit, high_limit)
    bw, bh = np.maximum((high - low).max(axis=(0, 1)), 1)
    origin = np.maximum(np.minimum(low, high_limit - np.array([bw, bh])), low_limit)
    return origin, int(bh), int(bw)


@dataclass
class _Sprites:
    """N objects rendered over T frames, each on a moving window of common size (bh, bw)."""

    where_nthw: np.ndarray  # flat index of each window pixel in the (T * H * W) frame pixels
    colour_nthw3: np.ndarray  # premultiplied by alpha
    alpha_nthw: np.ndarray
    shadow_nthw: np.ndarray | None  # how much each object's shadow darkens the ground
    depth_nt: np.ndarray  # distance of each object's centre, for painter's order


@dataclass
class _Posed:
    """N objects placed in every frame T: their yaw, and their vertices in the world and on
    the screen."""

    yaw_nt: np.ndarray
    world_ntv3: np.ndarray
    pixels_ntv2: np.ndarray


def _render_objects(
    camera: _Camera,
    meshes: list[_Mesh],
    positions_nt3: np.ndarray,
    yaw_nt: np.ndarray,
    colour_n3: np.ndarray,
    light_3: np.ndarray,
    shadows: bool,
) -> _Sprites:
    count, frames = yaw_nt.shape
    world_ntv3 = _turn(_padded_vertices(meshes), yaw_nt) + positions_nt3[:, :, None, :]
    pixels_ntv2, _ = camera.project(world_ntv3)
    shadow_ntc2 = (_shadow_outlines(camera, meshes, world_ntv3, positions_nt3, light_3)
                   if shadows else None)
    outlines = pixels_ntv2 if shadow_ntc2 is None else np.concatenate([pixels_ntv2, shadow_ntc2], 2)
    origin_nt2, bh, bw = _windows(outlines, camera)
    alpha_sp, shade_sp = _face_coverage(meshes, _Posed(yaw_nt, world_ntv3, pixels_ntv2), light_3,
                                        windows=(origin_nt2, bh, bw), camera=camera)
    shape = (count, frames, bh, bw)
    colour = shade_sp.reshape(*shape, 1) * colour_n3[:, None, None, None, :].astype(np.float32)
    shadow = None
    if shadow_ntc2 is not None:
        shadow = _shadow_coverage(shadow_ntc2, origin_nt2, bh, bw).reshape(shape)
    where = _window_pixels(camera, origin_nt2, bh, bw)
    return _Sprites(where, colour, alpha_sp.reshape(shape), shadow,
                    _centre_depths(camera, meshes, positions_nt3))


def _turn(v_nx3: np.ndarray, yaw_nt: np.ndarray) -> np.ndarray:
    """Points or normals (N, X, 3) of each object turned by its yaw of every frame about the
    vertical axis -> (N, T, X, 3)."""
    cos, sin = np.cos(yaw_nt)[..., None], np.sin(yaw_nt)[..., None]  # (N, T, 1)
    x, y, z = v_nx3[:, None, :, 0], v_nx3[:, None, :, 1], v_nx3[:, None, :, 2]
    y_ntx = np.broadcast_to(y, (*yaw_nt.shape, y.shape[2]))
    return np.stack([x * cos + z * sin, y_ntx, -x * sin + z * cos], axis=-1)


def _padded_vertices(meshes: list[_Mesh]) -> np.ndarray:
    """(N, V, 3): every object padded to the same vertex count by repeating its first vertex."""
    most = max(len(mesh.vertices_v3) for mesh in meshes)
    return np.stack(
        [
            np.concatenate(
                [m.vertices_v3, np.repeat(m.vertices_v3[:1], most - len(m.vertices_v3), 0)]
            )
            for m in meshes
        ]
    )


def _centre_depths(camera: _Camera, meshes: list[_Mesh], positions_nt3: np.ndarray
                   ) -> np.ndarray:
    """Distance (N, T) of each object's centre from the camera, for painter's order."""
    heights_n = np.array([mesh.height for mesh in meshes])
    middle = positions_nt3 + np.stack([0 * heights_n, heights_n / 2, 0 * heights_n], -1)[:, None]
    _, depth_nt = camera.project(middle)
    return depth_nt


def _shadow_outlines(
    camera: _Camera,
    meshes: list[_Mesh],
    world_ntv3: np.ndarray,
    positions_nt3: np.ndarray,
    light_3: np.ndarray,
) -> np.ndarray:
    """Pixel outlines (N, T, C, 2) of the shadows: each base polygon dropped onto the ground,
    a little larger, pushed away from the light and further the higher the object flies."""
    count, frames = positions_nt3.shape[:2]
    n_idx, t_idx = np.arange(count)[:, None, None], np.arange(frames)[None, :, None]
    flat = np.array([1.0, 0.0, 1.0])
    footprints_nc = np.stack([mesh.footprint_c for mesh in meshes])
    base = world_ntv3[n_idx, t_idx, footprints_nc[:, None, :]] * flat
    centre = positions_nt3[:, :, None, :] * flat
    offset = -light_3 * flat * (0.1 + 0.3 * positions_nt3[..., 1:2, None])
    shadow_ntc2, _ = camera.project(centre + 1.15 * (base - centre) + offset)
    return shadow_ntc2


def _face_coverage(
    meshes: list[_Mesh],
    posed: _Posed,
    light_3: np.ndarray,
    *,
    windows: tuple[np.ndarray, int, int],
    camera: _Camera,
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and shade (N * T, bh * bw) of the faces that face the camera, on each (object,
    frame) window of ``windows`` (origins (N, T, 2) and the common size bh, bw)."""
    count, frames = posed.yaw_nt.shape
    _, bh, bw = windows
    segments = count * frames  # one per (object, frame), in that order
    alpha_sp = np.zeros(segments * bh * bw)
    shade_sp = np.zeros(segments * bh * bw)
    groups = (
        _face_group([m.quads_f4 for m in meshes], [m.quad_normals_f3 for m in meshes]),
        _face_group([m.caps_fc for m in meshes], [m.cap_normals_f3 for m in meshes]),
    )
    for group in groups:
        faces = None if group is None else _rasterise_faces(
            group, posed, light_3, windows=windows, camera=camera)
        if faces is None:
            continue
        where_kp, cover_kp, shade_k = faces
        alpha_sp += np.bincount(where_kp.ravel(), cover_kp.ravel(), len(alpha_sp))
        shade_sp += np.bincount(
            where_kp.ravel(), (cover_kp * shade_k[:, None]).ravel(), len(shade_sp)
        )
    alpha_sp = alpha_sp.astype(np.float32).reshape(segments, bh * bw)
    shade_sp = shade_sp.astype(np.float32).reshape(segments, bh * bw)
    # faces meet edge to edge, so coverages add to ~1 inside; renormalise where they overshoot
    excess = np.maximum(alpha_sp, 1.0)
    alpha_sp /= excess
    shade_sp /= excess
    return alpha_sp, shade_sp


def _rasterise_faces(
    group: _FaceGroup,
    posed: _Posed,
    light_3: np.ndarray,
    *,
    windows: tuple[np.ndarray, int, int],
    camera: _Camera,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The K faces of ``group`` that face the camera, each on a small window of its own:
    (flat index of each face-window pixel among all (object, frame) windows (K, P), coverage
    (K, P), shade (K,)); None when no face is seen (e.g. a cone's base, seen from above)."""
    count, frames = posed.yaw_nt.shape
    origin_nt2, bh, bw = windows
    pixels_ntv2 = posed.pixels_ntv2
    n_idx, t_idx = np.arange(count)[:, None, None], np.arange(frames)[None, :, None]
    normals_ntf3 = _turn(group.normals_nf3, posed.yaw_nt)
    on_face = posed.world_ntv3[n_idx, t_idx, group.starts_nfe[:, None, :, 0]]  # (N, T, F, 3)
    camera_position = np.array([0.0, CAMERA_HEIGHT, 0.0])
    facing = ((camera_position - on_face) * normals_ntf3).sum(-1) > 0  # back-face culling
    n_k, t_k, f_k = np.nonzero(facing & group.valid_nf[:, None, :])
    if len(n_k) == 0:
        return None
    n_k1, t_k1 = n_k[:, None], t_k[:, None]
    starts = pixels_ntv2[n_k1, t_k1, group.starts_nfe[n_k, f_k]]  # (K, E, 2)
    ends = pixels_ntv2[n_k1, t_k1, group.ends_nfe[n_k, f_k]]
    # each face on its own small window inside its object's window: faces are much
    # smaller than objects (a cylinder's side is a thin strip)
    outer = origin_nt2[n_k, t_k]
    inner, fh, fw = _windows(starts[None], camera, inside=(outer, bh, bw))
    cover_kp = _coverage(starts, ends, inner[0], fh, fw)
    shade_k = AMBIENT + (1 - AMBIENT) * np.clip(normals_ntf3[n_k, t_k, f_k] @ light_3, 0, None)
    # flat position of every face-window pixel among all (object, frame) windows
    local = inner[0] - outer
    rows = (n_k * frames + t_k)[:, None] * bh + local[:, 1, None] + np.arange(fh)
    where_kp = (rows[:, :, None] * bw + local[:, 0, None, None] + np.arange(fw)).reshape(
        len(n_k), fh * fw
    )
    return where_kp, cover_kp, shade_k


def _shadow_coverage(shadow_ntc2: np.ndarray, origin_nt2: np.ndarray, bh: int, bw: int
                     ) -> np.ndarray:
    """Coverage (N * T, bh * bw) of each shadow outline on its (object, frame) window."""
    segments = origin_nt2.shape[0] * origin_nt2.shape[1]
    starts = shadow_ntc2.reshape(segments, -1, 2)
    ends = np.roll(starts, -1, axis=1)
    return _coverage(starts, ends, origin_nt2.reshape(segments, 2), bh, bw)


def _window_pixels(camera: _Camera, origin_nt2: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Flat index (N, T, bh, bw) of each window pixel among the (T * H * W) frame pixels."""
    frames = origin_nt2.shape[1]
    rows = origin_nt2[..., 1, None, None] + np.arange(bh)[:, None]  # (N, T, bh, 1)
    cols = origin_nt2[..., 0, None, None] + np.arange(bw)  # (N, T, 1, bw)
    return (np.arange(frames)[:, None, None] * camera.height + rows) * camera.width + cols


def _rng(config: TrajectoryConfig, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: use one of {sorted(SPLITS)}")
    if index < 0:
        raise ConfigError(f"clip index {index}: use a non-negative index")
    return np.random.default_rng([config.seed, SPLITS[split], index])


def render_clip(
    config: TrajectoryConfig, split: str = "train", index: int = 0
) -> tuple[np.ndarray, int]:
    """Clip `index` of `split` -> (uint8 frames (T, H, W, 3), index into TRAJECTORY_CLASSES)."""
    rng = _rng(config, split, index)
    camera = _Camera(config.resolution, config.resolution)
    kind = config.classes[rng.integers(len(config.classes))]
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    light = np.array([rng.uniform(-1, 1), 1.3, rng.uniform(-1, 0.2)])
    light /= np.linalg.norm(light)
    background_p3 = _background(camera, rng)

    shapes = rng.integers(len(config.shapes), size=count)
    sizes = rng.uniform(0.9, 1.4, count)
    proportions = rng.uniform(0, 1, (count, 2))
    meshes = [
        _make_mesh(config.shapes[shape], size, p, config.facets)
        for shape, size, p in zip(shapes, sizes, proportions, strict=True)
    ]
    # draw PATH_CANDIDATES paths per object at once; keep the first that stays in view
    frames = config.frames
    s_t = np.linspace(0.0, 1.0, frames)
    candidates = _paths(kind, s_t, rng, config.travel, count * PATH_CANDIDATES)
    heights = np.repeat([mesh.height for mesh in meshes], PATH_CANDIDATES)
    score = _in_view(camera, candidates, heights, np.repeat(sizes, PATH_CANDIDATES))
    score = score.reshape(count, PATH_CANDIDATES)
    chosen = np.argmax(score == score.max(axis=1, keepdims=True), axis=1)  # first of the best
    positions_nt3 = candidates.reshape(count, PATH_CANDIDATES, -1, 3)[np.arange(count), chosen]
    yaw_nt = rng.uniform(0, 2 * np.pi, (count, 1)) + rng.uniform(-1, 1, (count, 1)) * (
        config.spin * s_t
    )
    colours = _hsv_to_rgb(
        rng.uniform(0, 1, count), rng.uniform(0.55, 0.9, count), rng.uniform(0.8, 1.0, count)
    )
    sprites = _render_objects(camera, meshes, positions_nt3, yaw_nt, colours, light, config.shadows)

    # work on all pixels of all frames as one (T*H*W, 3) table, and only on the window pixels
    # that an object or a shadow covers
    pixels = np.tile(background_p3, (frames, 1))
    window = sprites.alpha_nthw[0, 0].size
    if sprites.shadow_nthw is not None:  # shadows darken the ground before any object is drawn
        shaded = np.flatnonzero(sprites.shadow_nthw)  # sorted by object
        bounds = np.searchsorted(shaded // (frames * window), np.arange(count + 1))
        darken = 1 - SHADOW_STRENGTH * sprites.shadow_nthw.ravel()[shaded]
        where = sprites.where_nthw.ravel()[shaded]
        for n in range(count):  # one object at a time: shadows of two objects may overlap
            part = slice(bounds[n], bounds[n + 1])
            pixels[where[part]] *= darken[part, None]
    # painter's order per frame, far to near. At one rank every frame has one object, so
    # each rank is one vectorised step.
    order_nt = np.argsort(-sprites.depth_nt, axis=0)
    rank_nt = np.empty_like(order_nt)
    rank_nt[order_nt, np.arange(frames)] = np.arange(count)[:, None]
    covered = np.flatnonzero(sprites.alpha_nthw)
    rank = rank_nt.ravel()[covered // window]
    by_rank = np.argsort(rank, kind="stable")
    covered, bounds = covered[by_rank], np.searchsorted(rank[by_rank], np.arange(count + 1))
    where = sprites.where_nthw.ravel()[covered]
    alpha = sprites.alpha_nthw.ravel()[covered, None]
    colour = sprites.colour_nthw3.reshape(-1, 3)[covered]
    for r in range(count):
        part = slice(bounds[r], bounds[r + 1])
        pixels[where[part]] = pixels[where[part]] * (1 - alpha[part]) + colour[part]
    pixels *= 255
    pixels += 0.5
    frames_u8 = np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)
    label = TRAJECTORY_CLASSES.index(kind)
    return frames_u8.reshape(frames, config.resolution, config.resolution, 3), label


class TrajectoryVideos(Dataset):
    """`size` clips of one split, rendered on demand; items match VideoFileDataset's."""

    def __init__(self, config: TrajectoryConfig, split: str = "train", size: int = 1024):
        if split not in SPLITS:
            raise ConfigError(f"split={split!r}: use one of {sorted(SPLITS)}")
        if size < 1:
            raise ConfigError(f"size={size}: use at least one clip")
        self.config, self.split, self.size = config, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.size <= index < self.size:
            raise IndexError(f"clip {index} of {self.size}")
        index %= self.size
        frames_thw3, label = render_clip(self.config, split=self.split, index=index)
        video: torch.Tensor = to_model_range(frames_thw3)  # (3, T, H, W) in [-1, 1]
        return {"video": video, "label": label, "index": index}
