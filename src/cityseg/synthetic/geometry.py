"""Camera projection and polygon helpers shared by the scene builder and the rasterisers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Pixel coordinates (x, y) of one polygon before clipping: (N, 2) float.
Polygon = np.ndarray


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at height `cam_height` above flat ground, optical axis parallel to it; world coordinates are
    metres: X to the right, Y up from the ground, Z forward."""

    width: int
    height: int
    focal: float  # pixels
    cx: float  # column of the vanishing point
    horizon: float  # row of the horizon
    cam_height: float  # metres

    def project(self, x, y, z) -> Polygon:
        """World points (metres, broadcast together) -> (N, 2) pixel coordinates."""
        x, y, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z)))
        u = self.cx + self.focal * x / z
        v = self.horizon + self.focal * (self.cam_height - y) / z
        return np.stack([u, v], axis=-1).reshape(-1, 2)

    @property
    def z_bottom(self) -> float:
        """Depth of the ground seen at the image's bottom row: nothing nearer is visible on the ground."""
        return self.focal * self.cam_height / (self.height - self.horizon)


def rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """(4, 2) axis-aligned rectangle, counter-clockwise from bottom left."""
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


def disc(cx: float, cy: float, r: float, n: int = 10) -> np.ndarray:
    """(n, 2) regular polygon approximating a circle."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def arc(cx: float, cy: float, r: float, start_deg: float, stop_deg: float, n: int) -> np.ndarray:
    angles = np.deg2rad(np.linspace(start_deg, stop_deg, n))
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def scale_about_centre(shape: np.ndarray, factor: float) -> np.ndarray:
    centre = shape.mean(axis=0)
    return centre + (shape - centre) * factor


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the silhouette of a projected box is the hull of its corners."""
    pts = sorted(map(tuple, points))

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(reversed(pts)))


def box_corners(x: float, z: float, length: float, width: float, y0: float, y1: float, yaw: float) -> np.ndarray:
    """(8, 3) corners of a box standing on the ground, its length along Z turned by `yaw` radians."""
    dl, dw = np.meshgrid([-length / 2, length / 2], [-width / 2, width / 2])
    dl, dw = dl.ravel(), dw.ravel()
    dx = dw * np.cos(yaw) + dl * np.sin(yaw)
    dz = -dw * np.sin(yaw) + dl * np.cos(yaw)
    corners = [np.stack([x + dx, np.full(4, y), z + dz], axis=1) for y in (y0, y1)]
    return np.concatenate(corners)


def clip_half_plane(points: list[tuple[float, float]], axis: int, limit: float, keep_below: bool) -> list:
    """One Sutherland-Hodgman pass: keep the part with coordinate[axis] <= limit (or >=)."""
    if not points:
        return points

    def inside(p) -> bool:
        return p[axis] <= limit if keep_below else p[axis] >= limit

    out = []
    prev = points[-1]
    for cur in points:
        if inside(cur) != inside(prev):
            t = (limit - prev[axis]) / (cur[axis] - prev[axis])
            out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
        if inside(cur):
            out.append(cur)
        prev = cur
    return out


def band(shape: np.ndarray, y0: float, y1: float) -> np.ndarray | None:
    """The part of a silhouette between heights y0 and y1 (a person's head, their legs)."""
    pts = clip_half_plane([tuple(p) for p in shape.tolist()], 1, y0, keep_below=False)
    pts = clip_half_plane(pts, 1, y1, keep_below=True)
    return np.array(pts) if len(pts) >= 3 else None


def clip_polygon(polygon: Polygon, width: int, height: int) -> list[list[int]] | None:
    """Clip to the pixel grid [0, W-1] x [0, H-1] and round, as in the real JSON; None when empty."""
    polygon = np.asarray(polygon, dtype=float)
    lo, hi = polygon.min(axis=0), polygon.max(axis=0)
    if hi[0] < 0 or hi[1] < 0 or lo[0] > width - 1 or lo[1] > height - 1:
        return None
    if lo[0] >= 0 and lo[1] >= 0 and hi[0] <= width - 1 and hi[1] <= height - 1:
        pts = polygon  # inside already: skip the per-vertex Python loop
    else:
        clipped = [tuple(p) for p in polygon.tolist()]
        for axis, limit, below in ((0, 0.0, False), (0, width - 1.0, True), (1, 0.0, False), (1, height - 1.0, True)):
            clipped = clip_half_plane(clipped, axis, limit, below)
        if len(clipped) < 3:
            return None
        pts = np.array(clipped)
    rounded = np.rint(pts).astype(int)
    # drop consecutive duplicates that rounding creates; keeps the JSON small at tiny sizes
    keep = np.any(rounded != np.roll(rounded, 1, axis=0), axis=1)
    rounded = rounded[keep]
    if len(rounded) < 3:
        return None
    return rounded.tolist()
